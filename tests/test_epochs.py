"""train.epochs/decay_epochs: the reference's n_epochs/n_epochs_decay, converted to steps."""

from __future__ import annotations

import logging

import pytest
import yaml

from cyclestyle.cli import main
from cyclestyle.train.config import (
    ConfigError,
    ExperimentConfig,
    TrainConfig,
    from_dict,
    resolve_epochs,
)
from tests.helpers import TINY, tiny_overrides


def _config(**train) -> ExperimentConfig:
    return from_dict({"train": train})


@pytest.mark.parametrize("world_size, batch_size, accum, max_steps, decay_start", [
    (1, 1, 1, 2000, 1000),       # 100 + 100 epochs of 10 images, one image per step
    (2, 1, 1, 1000, 500),        # two processes: each step consumes 2 images
    (1, 1, 3, 667, 334),         # gradient accumulation: ceil(2000 / 3), ceil(1000 / 3)
    (2, 4, 3, 84, 42),           # effective batch 4 * 2 * 3 = 24: ceil(2000/24), ceil(1000/24)
])
def test_epochs_convert_to_steps(world_size, batch_size, accum, max_steps, decay_start):
    config = _config(epochs=100, decay_epochs=100, batch_size=batch_size, grad_accum_steps=accum)
    resolve_epochs(config, dataset_size=10, world_size=world_size)
    assert config.train.max_steps == max_steps
    assert config.train.decay_start_step == decay_start


def test_decay_epochs_alone_decays_from_the_start():
    config = resolve_epochs(_config(decay_epochs=3), dataset_size=7)
    assert (config.train.max_steps, config.train.decay_start_step) == (21, 0)


def test_without_epochs_steps_are_untouched():
    config = resolve_epochs(_config(max_steps=123, decay_start=45), dataset_size=10, world_size=2)
    assert (config.train.max_steps, config.train.decay_start_step) == (123, 45)


def test_both_forms_must_agree():
    resolve_epochs(_config(epochs=1, decay_epochs=1, max_steps=10, decay_start=5), 10, 2)
    with pytest.raises(ConfigError, match=r"train\.max_steps: 11 is invalid: disagrees with "
                       r"train\.epochs/decay_epochs; expected 10 \(what"):
        resolve_epochs(_config(epochs=1, decay_epochs=1, max_steps=11), 10, 2)
    with pytest.raises(ConfigError, match=r"train\.decay_start: 4(\.0)? is invalid.*expected 5 "):
        resolve_epochs(_config(epochs=1, decay_epochs=1, decay_start=4), 10, 2)


@pytest.mark.parametrize("key, value", [("max_steps", 200_000), ("decay_start", 0.5)])
def test_a_set_value_equal_to_its_default_must_agree_too(key, value):
    """train.max_steps=200000 (the default) next to epochs is a choice, not an unset key."""
    assert getattr(TrainConfig(), key) == value
    with pytest.raises(ConfigError, match=rf"train\.{key}: {value} is invalid: disagrees"):
        resolve_epochs(_config(epochs=1, decay_epochs=1, **{key: value}), 10, 2)
    unset = resolve_epochs(_config(epochs=1, decay_epochs=1), 10, 2)  # both computed
    assert (unset.train.max_steps, unset.train.decay_start_step) == (10, 5)


def test_a_config_built_in_code_compares_with_the_defaults():
    config = ExperimentConfig(train=TrainConfig(epochs=1, decay_epochs=1, max_steps=11))
    with pytest.raises(ConfigError, match=r"train\.max_steps: 11 is invalid"):
        resolve_epochs(config, 10, 2)
    config = ExperimentConfig(train=TrainConfig(epochs=1, decay_epochs=1))
    assert resolve_epochs(config, 10, 2).train.max_steps == 10


def test_resolving_twice_is_harmless_and_logs_both_forms(caplog):
    config = _config(epochs=2, decay_epochs=2, batch_size=2)
    with caplog.at_level(logging.INFO, logger="cyclestyle.train.config"):
        resolve_epochs(config, 5, 1)
        resolve_epochs(config, 5, 1)  # CLI, then Trainer: the resolved config agrees with itself
    assert config.train.max_steps == 10
    assert "train.epochs=2 + train.decay_epochs=2" in caplog.text
    assert "train.max_steps=10, train.decay_start=5" in caplog.text


def test_negative_epochs_are_named():
    with pytest.raises(ConfigError, match=r"train\.epochs: -1 is invalid"):
        _config(epochs=-1).train.validate()


@pytest.fixture
def tiny_without_steps(tmp_path):
    data = yaml.safe_load(TINY.read_text())
    del data["train"]["max_steps"]
    path = tmp_path / "tiny_epochs.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.mark.parametrize("world_size, max_steps, decay_start", [("1", 15, 10), ("2", 8, 5)])
def test_train_command_resolves_epochs_from_the_folders(
        image_dirs, tmp_path, tiny_without_steps, monkeypatch, world_size, max_steps, decay_start):
    import cyclestyle.train.trainer as trainer

    seen = []
    monkeypatch.setattr(trainer, "train", lambda config, resume=None: seen.append(config))
    monkeypatch.setenv("WORLD_SIZE", world_size)
    sets = tiny_overrides(image_dirs, tmp_path / "run", "train.epochs=2", "train.decay_epochs=1")
    assert main(["train", str(tiny_without_steps), *[f"--set={s}" for s in sets]]) == 0
    (config,) = seen  # 5 A and 4 B images: an epoch is 5 images
    assert (config.train.max_steps, config.train.decay_start_step) == (max_steps, decay_start)


def test_train_command_refuses_disagreeing_forms(image_dirs, tmp_path, capsys):
    sets = tiny_overrides(image_dirs, tmp_path / "run", "train.epochs=2")  # tiny: max_steps 20
    assert main(["train", str(TINY), *[f"--set={s}" for s in sets]]) == 2
    assert "train.max_steps: 20 is invalid: disagrees" in capsys.readouterr().err


def test_a_run_with_epochs_and_accumulation_stops_at_the_converted_step(image_dirs, tmp_path,
                                                                        tiny_without_steps):
    """5 A / 4 B images, 1 + 1 epochs, 2 micro-batches per step: ceil(10 / 2) = 5 steps."""
    from cyclestyle.checkpoint import load_checkpoint
    from cyclestyle.train.config import load_config
    from cyclestyle.train.trainer import train

    sets = tiny_overrides(image_dirs, tmp_path / "run", "train.epochs=1", "train.decay_epochs=1",
                          "train.grad_accum_steps=2", "train.sample_every=100")
    train(load_config(tiny_without_steps, sets))
    state = load_checkpoint(tmp_path / "run")
    assert state["step"] == 5
    assert (state["config"]["train"]["max_steps"], state["config"]["train"]["decay_start"]) == (5, 3)
