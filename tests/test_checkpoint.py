"""Checkpoints: atomic writes, rotation, and loads that never execute code."""

from __future__ import annotations

import os
import pickle

import pytest
import torch

from cyclestyle import checkpoint as ckpt
from cyclestyle.train.config import ExperimentConfig


def _state(value: float = 1.0) -> dict:
    return {"config": ExperimentConfig().to_dict(), "models": {"w": torch.full((3,), value)}}


def test_save_load_and_rotation(tmp_path):
    for step in (10, 20, 30, 40):
        ckpt.save_checkpoint(_state(step), tmp_path, step, keep=2)
    names = [p.name for p in ckpt.list_checkpoints(tmp_path)]
    assert names == ["step_00000030.pt", "step_00000040.pt"]
    state = ckpt.load_checkpoint(tmp_path)  # a run folder means its newest checkpoint
    assert state["step"] == 40 and torch.equal(state["models"]["w"], torch.full((3,), 40.0))
    assert state["cyclestyle_version"]


def test_crash_during_write_keeps_previous_checkpoint(tmp_path, monkeypatch):
    path = ckpt.save_checkpoint(_state(1.0), tmp_path, 10, keep=5)
    before = path.read_bytes()

    def dying_save(obj, f):
        f.write(b"half a checkpoint")
        raise OSError("No space left on device")

    monkeypatch.setattr(torch, "save", dying_save)
    with pytest.raises(OSError, match="No space left"):
        ckpt.atomic_torch_save(_state(2.0), path)
    assert path.read_bytes() == before
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temp file left behind


def test_latest_skips_a_truncated_newest(tmp_path):
    ckpt.save_checkpoint(_state(1.0), tmp_path, 10, keep=5)
    newest = ckpt.save_checkpoint(_state(2.0), tmp_path, 20, keep=5)
    newest.write_bytes(newest.read_bytes()[:100])
    with pytest.warns(UserWarning, match="step_00000020.pt"):
        assert ckpt.latest_checkpoint(tmp_path).name == "step_00000010.pt"


def test_not_a_checkpoint(tmp_path):
    path = tmp_path / "x.pt"
    torch.save({"weights": torch.zeros(1)}, path)
    with pytest.raises(ckpt.CheckpointError, match="not a cyclestyle checkpoint"):
        ckpt.load_checkpoint(path)
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        ckpt.load_checkpoint(tmp_path / "missing.pt")


# ---------------------------------------------------------------- untrusted and broken files


def _generator_state(config_args: dict | None = None, weight_args: dict | None = None,
                     generator: str = "unet_attn") -> dict:
    """A checkpoint state whose stored config asks for `config_args` while its weights come
    from a generator built with `weight_args` (the same by default)."""
    from cyclestyle.models import create_generator

    small = {"base_channels": 4, "channel_mults": [1, 1], "depth": 2,
             "attention_resolutions": [], "num_res_blocks": 1} if generator == "unet_attn" else {
             "base_channels": 4, "n_blocks": 1}
    torch.manual_seed(0)
    weights = ckpt.plain_state_dict(create_generator(generator, **{**small, **(weight_args or {})}))
    config = ExperimentConfig().to_dict()
    config["model"] = {"generator": generator, "generator_args": {**small, **(config_args or {})}}
    return {"config": config, "models": {"g_ab": weights, "g_ba": dict(weights)}}


def test_a_good_checkpoint_rebuilds_its_generators(tmp_path):
    path = ckpt.save_checkpoint(_generator_state(), tmp_path, 1, keep=1)
    g_ab, g_ba, config = ckpt.load_generators(path)
    assert not g_ab.training and config["model"]["generator"] == "unet_attn"
    assert all(p.device.type == "cpu" for p in g_ab.parameters())
    stored = torch.load(path, weights_only=True)["models"]["g_ab"]
    assert all(torch.equal(stored[k], v) for k, v in g_ab.state_dict().items())


class _Payload:
    """Unpickling this runs os.mkdir(marker): proof, by a side effect, that code ran."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


@pytest.mark.parametrize("kind", ["torch.save", "raw pickle"])
def test_code_carrying_checkpoint_does_not_run_its_code(tmp_path, kind):
    """Relies on the planted code's side effect, not on any message: the marker folder the
    payload would create must not exist after the load is refused."""
    marker = tmp_path / "payload_ran"
    path = tmp_path / "checkpoints" / "step_00000001.pt"
    path.parent.mkdir()
    state = {"format_version": 1, "config": {}, "models": {}, "x": _Payload(marker)}
    if kind == "torch.save":
        torch.save(state, path)
        unsafe_load = lambda: torch.load(path, weights_only=False)  # noqa: E731
    else:
        path.write_bytes(pickle.dumps(state))
        unsafe_load = lambda: pickle.loads(path.read_bytes())  # noqa: E731
    unsafe_load()  # the payload works: an unsafe load creates the marker...
    assert marker.is_dir()
    marker.rmdir()
    with pytest.raises(ckpt.CheckpointError):
        ckpt.load_checkpoint(path)
    with pytest.raises(ckpt.CheckpointError):
        ckpt.load_generators(tmp_path)
    assert not marker.exists()  # ...and ours never ran it


def _png_bytes() -> bytes:
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.mark.parametrize("content", [os.urandom(3000), _png_bytes(), b"model:\n  generator: x\n",
                                     pickle.dumps({"format_version": 1})],
                         ids=["random", "png", "yaml", "plain-pickle"])
def test_a_file_that_is_no_torch_save_file_gets_our_message(tmp_path, content):
    path = tmp_path / "g.pt"
    path.write_bytes(content)
    with pytest.raises(ckpt.CheckpointError) as info:
        ckpt.load_checkpoint(path)
    message = str(info.value)
    assert message == f"{path} is not a cyclestyle checkpoint (not a torch.save file)"
    assert "weights_only" not in message and "\n" not in message


@pytest.mark.filterwarnings("ignore:`torch.jit.\\w+` is deprecated:FutureWarning")
def test_empty_truncated_and_torchscript_files_get_their_own_message(tmp_path):
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    with pytest.raises(ckpt.CheckpointError, match=r"empty \(0 bytes\)"):
        ckpt.load_checkpoint(empty)
    good = ckpt.save_checkpoint(_state(), tmp_path, 1, keep=1)
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good.read_bytes()[:300])
    with pytest.raises(ckpt.CheckpointError, match="is damaged.*interrupted copy") as info:
        ckpt.load_checkpoint(truncated)
    assert "weights_only" not in str(info.value) and "\n" not in str(info.value)
    scripted = tmp_path / "g_ab.pt"
    torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), str(scripted))
    with pytest.raises(ckpt.CheckpointError, match="is a TorchScript file") as info:
        ckpt.load_checkpoint(scripted)
    assert "weights_only" not in str(info.value)


@pytest.mark.parametrize(("change", "expected"), [
    ({"format_version": "1"}, r"format_version: '1' is invalid: a str, not an integer; this "
                              r"cyclestyle \(.*\) reads formats 1 to 1"),
    ({"format_version": 1.0}, "format_version: 1.0 is invalid: a float"),
    ({"format_version": 0}, "format_version: 0 is invalid: below 1"),
    ({"config": ["model"]}, r"config: \['model'\] is invalid: a list"),
    ({"models": None}, "models: None is invalid: a NoneType; expected a mapping"),
    ({"models": [1, 2]}, r"models: \[1, 2\] is invalid: a list"),
    ({"models": {}}, "models.g_ab: None is invalid: missing"),
    ({"models": {"g_ab": "weights", "g_ba": {}}}, "models.g_ab: 'weights' is invalid: a str"),
    ({"models": {"g_ab": {"w": [1.0]}, "g_ba": {}}}, r"models.g_ab\['w'\]: \[1.0\] is invalid"),
    ({"config": {"model": {"generator": "vit"}}}, "model.generator: 'vit' is invalid"),
    ({"config": {"model": {"generator_args": {"wings": 2}}}}, "model.generator_args: wings"),
])
def test_structure_errors_are_one_line_checkpoint_errors(tmp_path, change, expected):
    state = {**_generator_state(), **change}
    path = tmp_path / "bad.pt"
    torch.save({"format_version": 1, "step": 1, **state}, path)
    with pytest.raises(ckpt.CheckpointError, match=expected) as info:
        ckpt.load_generators(path)
    assert str(info.value).startswith(f"{path}: ") and "\n" not in str(info.value)


def test_missing_models_key_is_a_checkpoint_error(tmp_path):
    path = tmp_path / "bad.pt"
    torch.save({"format_version": 1, "config": {}}, path)
    with pytest.raises(ckpt.CheckpointError, match="no 'models' key"):
        ckpt.load_checkpoint(path)


def test_a_config_asking_for_a_huge_network_is_refused_before_allocating(tmp_path,
                                                                        monkeypatch):
    """A 3 KB file whose config asks for base_channels=256 drove translate to 6.4 GB: the
    networks were built before any tensor was compared. Now only a `meta` build (shapes, no
    memory) happens before the refusal."""
    from cyclestyle.models.factory import ModelConfig

    state = _generator_state(config_args={"base_channels": 256})
    path = ckpt.save_checkpoint(state, tmp_path, 1, keep=1)
    assert path.stat().st_size < 50_000
    built_on = []
    real_build = ckpt.build_generators

    def spy(config):
        built_on.append(torch.get_default_device().type)
        return real_build(config)

    monkeypatch.setattr(ckpt, "build_generators", spy)
    with torch.device("meta"):
        big = real_build(ModelConfig(**state["config"]["model"]))[0].state_dict()
    key, want = next(iter(big.items()))
    got = state["models"]["g_ab"][key]
    with pytest.raises(ckpt.CheckpointError) as info:
        ckpt.load_generators(path)
    assert str(info.value) == (
        f"{path}: models.g_ab does not match its model config: {key!r} has shape "
        f"{tuple(got.shape)} in the file, {tuple(want.shape)} in the network the config builds")
    assert built_on == ["meta"]  # no real (CPU) network was built


def test_missing_and_unexpected_keys_are_named(tmp_path):
    state = _generator_state()
    first = next(iter(state["models"]["g_ab"]))
    del state["models"]["g_ab"][first]
    path = ckpt.save_checkpoint(state, tmp_path, 1, keep=1)
    with pytest.raises(ckpt.CheckpointError, match=f"models.g_ab .*{first!r} is missing"):
        ckpt.load_generators(path)
    state = _generator_state()
    state["models"]["g_ba"]["extra.weight"] = torch.zeros(2)
    path = ckpt.save_checkpoint(state, tmp_path, 2, keep=1)
    with pytest.raises(ckpt.CheckpointError,
                       match="models.g_ba .*'extra.weight' is not in the network"):
        ckpt.load_generators(path)


def test_a_tensor_without_its_data_in_the_file_is_refused(tmp_path):
    """A stride-0 view passes a shape check with a few bytes: refused before any copy."""
    state = _generator_state()
    key, value = next(iter(state["models"]["g_ab"].items()))
    state["models"]["g_ab"][key] = torch.zeros(1).expand(value.shape)
    path = ckpt.save_checkpoint(state, tmp_path, 1, keep=1)
    with pytest.raises(ckpt.CheckpointError, match=f"{key!r} has shape .* holds only 4 bytes"):
        ckpt.load_generators(path)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_generator_weights_are_refused_by_name(tmp_path, bad):
    state = _generator_state()
    keys = list(state["models"]["g_ba"])
    state["models"]["g_ba"][keys[3]] = state["models"]["g_ba"][keys[3]].clone()
    state["models"]["g_ba"][keys[3]].view(-1)[0] = bad
    path = ckpt.save_checkpoint(state, tmp_path, 1, keep=1)
    with pytest.raises(ckpt.CheckpointError,
                       match=rf"models.g_ba: {keys[3]!r} holds NaN or inf values"):
        ckpt.load_generators(path)
