"""Evaluation metrics: FID/KID with explicit extractors, style similarity, content preservation.

`evaluate()` runs them all for one translated set (the `cyclestyle evaluate` command);
`TrainingFID` scores a generator on a held-out set during training.
"""

from cyclestyle.metrics.evaluation import METRICS, EvaluateOptions, evaluate
from cyclestyle.metrics.features import (
    RESIZE_MODES,
    FeatureCache,
    FeatureExtractor,
    extract_features,
    features_of_tensors,
    load_inception,
    module_extractor,
    torchscript_inception,
)
from cyclestyle.metrics.fid import (
    fid_from_features,
    frechet_distance,
    kernel_inception_distance,
    trace_sqrt_product,
)
from cyclestyle.metrics.training import TrainingFID

__all__ = [
    "METRICS", "RESIZE_MODES", "EvaluateOptions", "FeatureCache", "FeatureExtractor",
    "TrainingFID", "evaluate", "extract_features", "features_of_tensors", "fid_from_features",
    "frechet_distance", "kernel_inception_distance", "load_inception", "module_extractor",
    "torchscript_inception", "trace_sqrt_product",
]
