"""Training: the experiment config, the CycleGAN objective, the trainer, data, demo and CLI.

    from cyclestyle.train import load_config, train
    train(load_config("configs/tiny.yaml", ["data.root=datasets/horse2zebra"]))

Exports load on first use, so `cyclestyle train --help` does not import torch.
"""

from cyclestyle._lazy import lazy_exports

__getattr__, __dir__ = lazy_exports(__name__, {
    "ExperimentConfig": "cyclestyle.train.config",
    "load_config": "cyclestyle.train.config",
    "ConfigError": "cyclestyle.options",
    "Trainer": "cyclestyle.train.trainer",
    "train": "cyclestyle.train.trainer",
    "lr_factor": "cyclestyle.train.trainer",
    "run_demo": "cyclestyle.train.demo",
})
