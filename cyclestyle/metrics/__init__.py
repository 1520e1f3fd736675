"""Evaluation metrics: FID/KID with explicit extractors, style similarity, content preservation.

`evaluate()` runs them all for one translated set (the `cyclestyle evaluate` command);
`TrainingFID` scores a generator on a held-out set during training.

Exports load on first use, so `cyclestyle.metrics.options` and `.resize` (torch-free) can be
imported by `--help` and configs without importing torch.
"""

from cyclestyle._lazy import lazy_exports

_FEATURES = "cyclestyle.metrics.features"
_FID = "cyclestyle.metrics.fid"
__getattr__, __dir__ = lazy_exports(__name__, {
    "METRICS": "cyclestyle.metrics.options",
    "EvaluateOptions": "cyclestyle.metrics.options",
    "evaluate": "cyclestyle.metrics.evaluation",
    "RESIZE_MODES": "cyclestyle.metrics.resize",
    "FeatureCache": _FEATURES,
    "FeatureExtractor": _FEATURES,
    "extract_features": _FEATURES,
    "features_of_tensors": _FEATURES,
    "load_inception": _FEATURES,
    "module_extractor": _FEATURES,
    "torchscript_inception": _FEATURES,
    "fid_from_features": _FID,
    "frechet_distance": _FID,
    "kernel_inception_distance": _FID,
    "trace_sqrt_product": _FID,
    "TrainingFID": "cyclestyle.metrics.training",
})

__all__ = [
    "METRICS", "RESIZE_MODES", "EvaluateOptions", "FeatureCache", "FeatureExtractor",
    "TrainingFID", "evaluate", "extract_features", "features_of_tensors", "fid_from_features",
    "frechet_distance", "kernel_inception_distance", "load_inception", "module_extractor",
    "torchscript_inception", "trace_sqrt_product",
]
