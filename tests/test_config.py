"""The config layer: YAML maps 1:1 onto dataclasses, overrides win, mistakes are named."""

from __future__ import annotations

from pathlib import Path

import pytest

from cyclestyle.train.config import (
    ConfigError,
    ExperimentConfig,
    apply_overrides,
    flat_keys,
    from_dict,
    load_config,
)

REPO = Path(__file__).resolve().parents[1]
REQUIRED_KEYS = ["output_dir", "data.domain_a", "data.domain_b", "data.image_size",
                 "train.max_steps", "train.checkpoint_every", "train.precision",
                 "model.generator", "model.discriminator"]


def test_documented_keys_exist():
    assert set(REQUIRED_KEYS) <= set(flat_keys())


@pytest.mark.parametrize("path", sorted((REPO / "configs").glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_configs_load(path):
    config = load_config(path)
    assert isinstance(config, ExperimentConfig)
    assert config.train.precision in ("auto", "fp32")  # nothing hard-codes bf16


def test_yaml_round_trip(tmp_path):
    config = load_config(REPO / "configs" / "tiny.yaml")
    again = tmp_path / "again.yaml"
    again.write_text(config.to_yaml())
    assert load_config(again) == config


def test_precedence_cli_over_yaml_over_defaults(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("train: {max_steps: 7, batch_size: 2}\n")
    config = load_config(path, ["train.max_steps=9"])
    assert config.train.max_steps == 9  # command line beats YAML
    assert config.train.batch_size == 2  # YAML beats default
    assert config.train.lr == ExperimentConfig().train.lr  # default kept


def test_unknown_key_lists_valid_ones(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("train: {max_step: 7}\n")
    with pytest.raises(ConfigError, match=r"train\.max_step\b.*valid keys:.*train\.max_steps"):
        load_config(path)
    with pytest.raises(ConfigError, match="unknown key.*trian"):
        load_config(None, ["trian.max_steps=3"])


@pytest.mark.parametrize(("override", "message"), [
    ("train.max_steps=ten", r"train\.max_steps: 'ten' is invalid: not an integer"),
    ("train.max_steps=2.5", r"train\.max_steps: 2\.5 is invalid: not an integer"),
    ("data.flip=maybe", r"data\.flip: 'maybe' is invalid: not a boolean; expected true or false"),
    ("train.betas=0.5", r"train\.betas: 0\.5 is invalid: not a list"),
    ("train.max_steps=0", r"train\.max_steps: 0 is invalid: out of range"),
    ("data.image_size=-4", r"data\.image_size: -4 is invalid"),
    ("train.precision=fp8", r"train\.precision: 'fp8' is invalid.*auto / fp32 / bf16 / fp16"),
    ("model.generator=unet", r"model\.generator: 'unet' is invalid: not a registered generator; "
     r"valid:.*unet_attn"),
    ("model.generator_args={widht: 3}", r"model\.generator_args: widht is invalid: not accepted"),
    ("loss.gan_mode=wgan", r"gan_mode"),
    ("nonsense", r"not of the form key=value"),
])
def test_bad_values_name_the_key(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, [override])


def test_overrides_parse_yaml_values():
    data = apply_overrides({}, ["a.b=3", "a.c=[1, 2]", "a.d=true", "e=x"])
    assert data == {"a": {"b": 3, "c": [1, 2], "d": True}, "e": "x"}


def test_unquoted_yaml_no_means_the_string_no(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("train: {project: no}\n")
    assert load_config(path).train.project == "no"
    assert load_config(None, ["train.project=no"]).train.project == "no"
    with pytest.raises(ConfigError, match="train.tracker: 'yes' is invalid"):
        load_config(None, ["train.tracker=yes"])


def test_configs_of_cyclestyle_0_1_read_mixed_precision_as_precision():
    assert from_dict({"train": {"mixed_precision": "no"}}).train.precision == "fp32"
    assert from_dict({"train": {"mixed_precision": False}}).train.precision == "fp32"
    assert from_dict({"train": {"mixed_precision": "bf16"}}).train.precision == "bf16"


def test_int_accepted_for_float_and_kept_as_float():
    config = from_dict({"train": {"lr": 1}})
    assert config.train.lr == 1.0 and isinstance(config.train.lr, float)


def test_exponent_without_dot_is_a_float():
    assert load_config(None, ["train.lr=1e-4"]).train.lr == 1e-4  # YAML 1.1 says "string"
    with pytest.raises(ConfigError, match=r"train\.lr: 'fast' is invalid: not a number"):
        load_config(None, ["train.lr=fast"])


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.yaml"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [unclosed\n")
    with pytest.raises(ConfigError, match="bad.yaml: not valid YAML"):
        load_config(bad)

