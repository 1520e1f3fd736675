"""Checkpoints: atomic writes, rotation, and loads that never execute code."""

from __future__ import annotations

import os
import pickle

import pytest
import torch

from cyclestyle import checkpoint as ckpt
from cyclestyle.config import ExperimentConfig


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


class _Exploit:
    def __reduce__(self):
        return (os.system, ("touch pwned",))


def test_code_carrying_pickle_is_refused(tmp_path):
    path = tmp_path / "checkpoints" / "step_00000001.pt"
    path.parent.mkdir()
    with path.open("wb") as f:
        pickle.dump({"format_version": 1, "config": {}, "x": _Exploit()}, f)
    with pytest.raises(ckpt.CheckpointError, match="weights_only=True"):
        ckpt.load_checkpoint(path)
    assert not (tmp_path / "pwned").exists() and not os.path.exists("pwned")


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
