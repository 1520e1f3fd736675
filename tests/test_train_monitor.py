"""What the trainer watches: non-finite losses (skip, count, stop) and held-out FID (best.pt)."""

from __future__ import annotations

import json

import pytest
import torch
from test_train import tiny_config
from torch import nn

from cyclestyle import checkpoint as ckpt
from cyclestyle.cli import main
from cyclestyle.train.config import ConfigError
from cyclestyle.train.monitor import NonFiniteLossError
from cyclestyle.train.trainer import Trainer


def poison_generator_loss(trainer: Trainer, bad_steps: set[int], part: str = "cycle") -> None:
    """Make `part` of G's loss NaN while computing the listed (1-based) steps."""
    original = trainer.generator_losses

    def poisoned(real_a, real_b):
        total, parts, fake_a, fake_b = original(real_a, real_b)
        if trainer.step + 1 in bad_steps:
            parts[part] = parts[part] * float("nan")
            total = sum(parts.values())
        return total, parts, fake_a, fake_b

    trainer.generator_losses = poisoned


def snapshot(trainer: Trainer) -> dict[str, torch.Tensor]:
    unwrap = trainer.accelerator.unwrap_model
    return {f"{name}.{k}": v.detach().clone() for name in ("g_ab", "d_a")
            for k, v in unwrap(getattr(trainer.nets, name)).state_dict().items()}


def changed(before: dict[str, torch.Tensor], after: dict[str, torch.Tensor], prefix: str) -> bool:
    return any(not torch.equal(before[k], after[k]) for k in before if k.startswith(prefix))


def metrics_rows(output_dir) -> list[dict]:
    return [json.loads(line) for line in (output_dir / "metrics.jsonl").read_text().splitlines()]


def test_a_nan_loss_skips_the_update_and_is_counted(image_dirs, tmp_path):
    out = tmp_path / "run"
    trainer = Trainer(tiny_config(image_dirs, out, "train.max_steps=4", "train.log_every=1",
                                  "train.checkpoint_every=4", "train.pool_size=4"))
    poison_generator_loss(trainer, {2})
    snapshots, original_step = [], trainer.train_step

    def recording(micro):
        before = snapshot(trainer)
        logs, ok = original_step(micro)
        snapshots.append((before, snapshot(trainer), ok))
        return logs, ok

    trainer.train_step = recording
    trainer.fit()
    assert [ok for _, _, ok in snapshots] == [True, False, True, True]
    before, after, _ = snapshots[1]
    assert not changed(before, after, "g_ab") and not changed(before, after, "d_a")
    before, after, _ = snapshots[2]
    assert changed(before, after, "g_ab") and changed(before, after, "d_a")  # training goes on
    for pool in (trainer.pool_a, trainer.pool_b):  # the bad step's fakes never reached D's history
        assert all(torch.isfinite(image).all() for image in pool.state_dict()["images"])
    rows = metrics_rows(out)
    assert [r["bad_steps"] for r in rows] == [0, 1, 1, 1]
    assert "cycle" not in rows[1] and all(torch.isfinite(torch.tensor(r["g_total"]))
                                          for r in rows if "g_total" in r)
    assert ckpt.load_checkpoint(out)["nonfinite"] == {"consecutive": 0, "total": 1}


def test_nonfinite_loss_skips_and_stops(image_dirs, tmp_path):
    """K bad steps in a row stop training with the loss and step named; the checkpoints written
    before the streak are intact and none is written during it."""
    out = tmp_path / "run"
    trainer = Trainer(tiny_config(image_dirs, out, "train.max_steps=12", "train.checkpoint_every=2",
                                  "train.keep_checkpoints=2", "train.max_bad_steps=3"))
    poison_generator_loss(trainer, set(range(4, 13)), part="identity")
    with pytest.raises(NonFiniteLossError, match=r"stopped at step 6: 3 steps in a row.*identity"):
        trainer.fit()
    names = [p.name for p in ckpt.list_checkpoints(out)]
    assert names == ["step_00000002.pt"]  # step 4 fell inside the streak: not saved
    state = ckpt.load_checkpoint(out)
    assert state["step"] == 2


def test_the_cli_reports_a_nan_streak_and_exits_nonzero(image_dirs, tmp_path, capsys):
    out = tmp_path / "run"
    args = ["train", "configs/tiny.yaml", "--set", f"data.domain_a={image_dirs[0]}",
            "--set", f"data.domain_b={image_dirs[1]}", "--set", f"output_dir={out}",
            "--set", "train.max_steps=3", "--set", "train.lr=1e30", "--set", "train.max_bad_steps=1",
            "--set", "train.progress=false"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "non-finite" in err and "train.lr" in err


def test_max_bad_steps_zero_turns_the_check_off(image_dirs, tmp_path):
    trainer = Trainer(tiny_config(image_dirs, tmp_path / "run", "train.max_steps=2",
                                  "train.max_bad_steps=0", "train.checkpoint_every=100"))
    poison_generator_loss(trainer, {1})
    with pytest.raises(NonFiniteLossError, match=r"step 2: parameter g_ab\..* is not finite"):
        trainer.fit()  # the NaN went through to the weights, but not into a checkpoint
    g_ab = trainer.accelerator.unwrap_model(trainer.nets.g_ab)
    assert not all(torch.isfinite(p).all() for p in g_ab.parameters())
    assert ckpt.list_checkpoints(tmp_path / "run") == []


class TinyEmbed(nn.Module):
    """A 12-d stand-in for Inception, saved as TorchScript like the real one."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 16, stride=16)
        self.pool = nn.AdaptiveAvgPool2d(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(torch.tanh(self.conv(x))).flatten(1)


@pytest.fixture
def tiny_inception(tmp_path):
    torch.manual_seed(0)
    path = tmp_path / "tiny_inception.pt"
    torch.jit.script(TinyEmbed()).save(str(path))
    return path


def test_held_out_fid_is_logged_and_the_best_step_kept(image_dirs, tmp_path, tiny_inception,
                                                       monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    out = tmp_path / "run"
    overrides = [f"eval.domain_a={image_dirs[0]}", f"eval.domain_b={image_dirs[1]}",
                 "eval.every=2", f"eval.inception_weights={tiny_inception}",
                 "train.checkpoint_every=1", "train.keep_checkpoints=1"]
    Trainer(tiny_config(image_dirs, out, "train.max_steps=6", *overrides)).fit()
    evals = {r["step"]: r["eval_fid"] for r in metrics_rows(out) if "eval_fid" in r}
    assert sorted(evals) == [2, 4, 6] and all(v >= 0 for v in evals.values())
    best_step = min(evals, key=evals.get)
    best = ckpt.load_checkpoint(out / "checkpoints" / ckpt.BEST_NAME)  # rotation kept it
    assert best["step"] == best_step
    assert best["eval"]["best_fid"] == pytest.approx(evals[best_step])
    g_ab, _, _ = ckpt.load_generators(out / "checkpoints" / ckpt.BEST_NAME)  # usable by translate
    assert g_ab(torch.zeros(1, 3, 32, 32)).shape == (1, 3, 32, 32)
    # A resumed run keeps judging "best" against the whole history.
    resumed = Trainer(tiny_config(image_dirs, out, "train.max_steps=8", *overrides), resume=True)
    assert resumed.training_fid.best_fid == pytest.approx(min(evals.values()))
    assert resumed.training_fid.best_step == best_step


def test_eval_without_held_out_folders_fails_before_training(image_dirs, tmp_path):
    with pytest.raises(ConfigError, match=r"eval\.domain_a: required when eval\.every > 0"):
        tiny_config(image_dirs, tmp_path / "run", "eval.every=10")
    with pytest.raises(ConfigError, match=r"eval\.domain_b: .*missing.* is not a folder"):
        tiny_config(image_dirs, tmp_path / "run", "eval.every=10",
                    f"eval.domain_a={image_dirs[0]}", f"eval.domain_b={tmp_path / 'missing'}")
