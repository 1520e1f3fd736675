"""The trainer end to end: files it writes, exact resume, SIGKILL recovery, real data."""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from cyclestyle import checkpoint as ckpt
from cyclestyle.options import ConfigError
from cyclestyle.train.config import load_config
from cyclestyle.train.monitor import LOCK_NAME
from cyclestyle.train.trainer import Trainer, lr_factor
from tests.helpers import TINY, tiny_config

REPO = Path(__file__).resolve().parents[1]

def final_params(output_dir) -> dict[str, torch.Tensor]:
    state = ckpt.load_checkpoint(output_dir)
    return {f"{net}.{k}": v for net, sd in state["models"].items() for k, v in sd.items()}


def assert_same_params(a, b):
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), f"{key} differs"


def test_two_step_smoke_writes_run_files(image_dirs, tmp_path):
    out = tmp_path / "run"
    config = tiny_config(image_dirs, out, "train.max_steps=2", "train.log_every=1",
                         "train.sample_every=2")
    path = Trainer(config).fit()
    assert path == out / "checkpoints" / "step_00000002.pt"
    assert load_config(out / "config.yaml") == config  # resolved config beside the outputs
    state = ckpt.load_checkpoint(path)
    assert state["step"] == 2 and state["config"] == config.to_dict()
    assert set(state["models"]) == {"g_ab", "g_ba", "d_a", "d_b"}
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2]
    assert all(r["g_total"] > 0 and r["d_a"] > 0 for r in rows)
    assert (out / "samples" / "step_00000002.png").is_file()
    g_ab, _, rebuilt = ckpt.load_generators(path)  # a checkpoint rebuilds its own generators
    assert rebuilt == config.to_dict()
    assert g_ab(torch.zeros(1, 3, 33, 45)).shape == (1, 3, 33, 45)


def test_training_changes_weights_and_lowers_cycle_loss(image_dirs, tmp_path):
    config = tiny_config(image_dirs, tmp_path / "run", "train.max_steps=30", "train.log_every=5",
                         "train.checkpoint_every=30")
    trainer = Trainer(config)
    before = {k: v.clone() for k, v in trainer.nets.g_ab.state_dict().items()}
    trainer.fit()
    after = trainer.accelerator.unwrap_model(trainer.nets.g_ab).state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before)
    rows = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["cycle"] < rows[0]["cycle"]


@pytest.mark.parametrize("extra", [[], ["train.grad_accum_steps=2"],
                                   ["model.generator_args.dropout=0.5"], ["model.objective=cut"]],
                         ids=["plain", "grad_accum", "dropout", "cut"])
def test_resume_is_exact(image_dirs, tmp_path, extra):
    """N steps in one run == N/2 steps, a new Trainer from the checkpoint, N/2 (on CPU, where
    kernels are deterministic; cuDNN's are not, even on the same GPU). Also with gradient
    accumulation (the stream is indexed by micro-step), with dropout (it draws from the
    global RNG, whose state the checkpoint carries) and with CUT (its projection heads and its
    patch positions, drawn from the same RNG)."""
    common = ["train.cpu=true", "train.max_steps=6", "train.checkpoint_every=3", "train.keep_checkpoints=5",
              "train.decay_start=2", "train.pool_size=2", "train.batch_size=2", *extra]
    full = tmp_path / "full"
    Trainer(tiny_config(image_dirs, full, *common)).fit()
    half = tmp_path / "half"
    (half / "checkpoints").mkdir(parents=True)
    shutil.copy(full / "checkpoints" / "step_00000003.pt", half / "checkpoints")
    resumed = Trainer(tiny_config(image_dirs, half, *common), resume=True)
    assert resumed.step == 3
    resumed.fit()
    assert_same_params(final_params(full), final_params(half))
    a, b = ckpt.load_checkpoint(full), ckpt.load_checkpoint(half)
    assert a["optimizers"]["g"]["state"][0]["step"] == b["optimizers"]["g"]["state"][0]["step"] == 6
    pool_full, pool_half = (c["processes"][0]["pools"]["b"]["images"] for c in (a, b))  # G_AB's fakes
    assert len(pool_full) == 2 and torch.equal(pool_full, pool_half)


def test_gradient_accumulation_matches_the_larger_batch(image_dirs, tmp_path):
    """2 micro-batches of 1 see the same images as 1 batch of 2 (the stream is indexed by
    micro-step), and per-sample norms make the averaged gradients equal up to rounding.
    Gradients, not weights, are compared: Adam turns rounding noise in a ~0 gradient into a
    full-size step."""

    def first_step_grads(output_dir, *overrides):
        trainer = Trainer(tiny_config(image_dirs, output_dir, "train.cpu=true",
                                      "train.max_steps=1", *overrides))
        grads = {}
        original = trainer.opt_g.step

        def record_then_step(*args, **kwargs):
            for group in trainer.opt_g.param_groups:
                for i, p in enumerate(group["params"]):
                    grads[i] = p.grad.clone()
            return original(*args, **kwargs)

        trainer.opt_g.step = record_then_step
        trainer.fit()
        return grads

    big = first_step_grads(tmp_path / "big", "train.batch_size=2")
    acc = first_step_grads(tmp_path / "acc", "train.batch_size=1", "train.grad_accum_steps=2")
    assert big.keys() == acc.keys()
    for i in big:
        if big[i].abs().max() > 1e-4:  # skip numerically-zero gradients (biases before norms)
            torch.testing.assert_close(acc[i], big[i], rtol=1e-3, atol=1e-4 * big[i].abs().max().item())
    single = first_step_grads(tmp_path / "one", "train.batch_size=1")
    assert any(not torch.allclose(single[i], big[i], rtol=1e-2) for i in big)  # the test can fail


def test_wandb_logs_offline_without_an_api_key(image_dirs, tmp_path, monkeypatch):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("WANDB_SILENT", "true")
    out = tmp_path / "run"
    Trainer(tiny_config(image_dirs, out, "train.max_steps=2", "train.tracker=wandb")).fit()
    runs = list((out / "wandb").glob("offline-run-*"))
    assert len(runs) == 1 and any(runs[0].rglob("*.wandb"))


def test_resume_rejects_a_different_model(image_dirs, tmp_path):
    out = tmp_path / "run"
    Trainer(tiny_config(image_dirs, out, "train.max_steps=1")).fit()
    with pytest.raises(ValueError, match="model section"):
        Trainer(tiny_config(image_dirs, out, "model.generator_args.base_channels=4"), resume=True)


def test_lr_schedule_constant_then_linear_to_zero(image_dirs, tmp_path):
    config = tiny_config(image_dirs, tmp_path, "train.max_steps=100", "train.decay_start=0.5")
    assert [lr_factor(s, config) for s in (0, 49, 50, 75, 100)] == [1, 1, 1, 0.5, 0]


def _cli(*args, **kw):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-m", "cyclestyle.cli", *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kw)


@pytest.mark.slow
def test_sigkill_then_resume_matches_uninterrupted(image_dirs, tmp_path):
    args = ["train", str(TINY), "--set", f"data.domain_a={image_dirs[0]}", "--set",
            f"data.domain_b={image_dirs[1]}", "--set", "train.max_steps=16", "--set",
            "train.checkpoint_every=4", "--set", "train.progress=false", "--set", "train.cpu=true"]
    killed = tmp_path / "killed"
    proc = _cli(*args, "--set", f"output_dir={killed}")
    deadline = time.time() + 120
    while not (killed / "checkpoints" / "step_00000004.pt").exists():
        assert proc.poll() is None, proc.stdout.read()
        assert time.time() < deadline, "no checkpoint within 120 s"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert ckpt.load_checkpoint(killed)["step"] < 16  # really interrupted
    resumed = _cli(*args, "--set", f"output_dir={killed}", "--resume")
    log = resumed.communicate(timeout=900)[0]
    assert resumed.returncode == 0, log
    assert "resuming from" in log
    clean = tmp_path / "clean"
    proc = _cli(*args, "--set", f"output_dir={clean}")
    assert proc.wait(timeout=900) == 0
    assert_same_params(final_params(clean), final_params(killed))


@pytest.mark.slow
def test_sigterm_checkpoints_and_exits(image_dirs, tmp_path):
    out = tmp_path / "run"
    proc = _cli("train", str(TINY), "--set", f"data.domain_a={image_dirs[0]}", "--set",
                f"data.domain_b={image_dirs[1]}", "--set", f"output_dir={out}", "--set",
                "train.max_steps=100000", "--set", "train.checkpoint_every=100000", "--set",
                "train.log_every=1", "--set", "train.progress=false")
    deadline = time.time() + 120
    while not (out / "metrics.jsonl").exists() or len((out / "metrics.jsonl").read_text().splitlines()) < 3:
        assert proc.poll() is None and time.time() < deadline
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    log = proc.communicate(timeout=120)[0]
    assert proc.returncode == 0, log
    assert "SIGTERM" in log and "--resume" in log
    assert 3 <= ckpt.load_checkpoint(out)["step"] < 100000


def test_cli_errors_are_clear(image_dirs, tmp_path):
    proc = _cli("train", str(TINY), "--set", f"data.domain_a={tmp_path / 'nowhere'}", "--set",
                f"data.domain_b={image_dirs[1]}", "--set", f"output_dir={tmp_path / 'o'}")
    out = proc.communicate(timeout=120)[0]
    assert proc.returncode == 2
    assert "nowhere" in out and "Traceback" not in out


def test_real_photos_and_paintings_with_real_vgg(shared_photo_dir, shared_painting_dir,
                                                 shared_vgg_prefix, tmp_path):
    """A few steps on the shared real sets with the real VGG prefix as perceptual loss."""
    out = tmp_path / "run"
    config = tiny_config((shared_photo_dir, shared_painting_dir), out, "data.image_size=48",
                         "train.max_steps=3", "train.log_every=1", "loss.lambda_perceptual=1.0",
                         "loss.lambda_content=0.5", f"loss.vgg_weights={shared_vgg_prefix}")
    Trainer(config).fit()
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 3
    assert all(0 < r["perceptual"] < 1e3 and 0 < r["content"] < 1e3 for r in rows)
    g_ab, _, _ = ckpt.load_generators(out)
    photo = next(shared_photo_dir.iterdir())
    from cyclestyle.train.data import load_image, pil_to_tensor

    image = pil_to_tensor(load_image(photo)).unsqueeze(0)[..., :101, :77]
    with torch.no_grad():
        assert g_ab(image).shape == image.shape


def test_a_new_run_refuses_to_overwrite_an_earlier_runs_checkpoints(image_dirs, tmp_path):
    out = tmp_path / "run"
    path = Trainer(tiny_config(image_dirs, out, "train.max_steps=1")).fit()
    before = path.read_bytes()
    with pytest.raises(ValueError, match=r"already holds checkpoints .*step_00000001\.pt.*--resume"):
        Trainer(tiny_config(image_dirs, out, "train.max_steps=1"))
    assert path.read_bytes() == before


# --- one run per output_dir ------------------------------------------------------------------

def _lock_of(pid: int, output_dir: Path) -> Path:
    output_dir.mkdir(parents=True, exist_ok=True)
    path = output_dir / LOCK_NAME
    path.write_text(json.dumps({"pid": pid, "host": socket.gethostname(), "token": "other"}))
    return path


def test_a_second_run_on_a_locked_output_dir_is_refused(image_dirs, tmp_path):
    """Before the first checkpoint exists, only the lock keeps a second run out."""
    out = tmp_path / "run"
    first = Trainer(tiny_config(image_dirs, out, "train.max_steps=1"))
    lock = json.loads((out / LOCK_NAME).read_text())
    assert lock["pid"] == os.getpid() and lock["host"] == socket.gethostname()
    with pytest.raises(ConfigError, match=rf"output_dir {out} is locked by PID {os.getpid()} "
                                          rf"on host {socket.gethostname()}"):
        Trainer(tiny_config(image_dirs, out, "train.max_steps=1"))
    first.fit()
    assert not (out / LOCK_NAME).exists()  # released at the end of the run
    with pytest.raises(ConfigError, match="already holds checkpoints"):  # the lock is free again
        Trainer(tiny_config(image_dirs, out, "train.max_steps=1"))
    assert not (out / LOCK_NAME).exists()  # and released by a Trainer that failed to start


def test_a_live_process_lock_is_refused_and_a_dead_ones_taken_over(image_dirs, tmp_path, caplog):
    out = tmp_path / "run"
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        lock = _lock_of(other.pid, out)
        with pytest.raises(ConfigError, match=rf"locked by PID {other.pid} on host "
                                              rf"{socket.gethostname()} \(a run is using it"):
            Trainer(tiny_config(image_dirs, out, "train.max_steps=1"))
        assert json.loads(lock.read_text())["pid"] == other.pid  # not ours to remove
    finally:
        other.kill()
        other.wait()  # reaped: the PID no longer exists
    with caplog.at_level(logging.WARNING, logger="cyclestyle"):
        trainer = Trainer(tiny_config(image_dirs, out, "train.max_steps=1"))
    assert f"taking over the lock of PID {other.pid}" in caplog.text
    assert json.loads(lock.read_text())["pid"] == os.getpid()
    trainer.fit()
    assert not lock.exists()


def test_an_empty_lock_left_by_a_kill_is_taken_over(image_dirs, tmp_path):
    """A run killed between creating the lock and writing its PID leaves an empty file; once
    it is a few seconds old (no writer is that slow) it counts as stale."""
    lock = _lock_of(0, tmp_path / "run")
    lock.write_text("")
    os.utime(lock, (time.time() - 60, time.time() - 60))
    Trainer(tiny_config(image_dirs, tmp_path / "run", "train.max_steps=1")).fit()
    assert not lock.exists()


def test_a_lock_from_another_host_is_refused(image_dirs, tmp_path):
    lock = _lock_of(12345, tmp_path / "run")
    lock.write_text(json.dumps({"pid": 12345, "host": "elsewhere", "token": "x"}))
    with pytest.raises(ConfigError, match=r"locked by PID 12345 on host elsewhere"):
        Trainer(tiny_config(image_dirs, tmp_path / "run", "train.max_steps=1"))


def test_two_cli_runs_started_together_one_trains(image_dirs, tmp_path):
    out = tmp_path / "run"
    args = ["train", str(TINY), "--set", f"data.domain_a={image_dirs[0]}", "--set",
            f"data.domain_b={image_dirs[1]}", "--set", f"output_dir={out}", "--set",
            "train.max_steps=30", "--set", "train.checkpoint_every=30", "--set",
            "train.progress=false"]  # one checkpoint, at the end: only the lock stops the loser
    procs = [_cli(*args) for _ in range(2)]
    logs = [p.communicate(timeout=600)[0] for p in procs]
    codes = sorted(p.returncode for p in procs)
    assert codes == [0, 2], logs
    loser = logs[[p.returncode for p in procs].index(2)]
    assert "is locked by PID" in loser and "Traceback" not in loser
    assert ckpt.load_checkpoint(out)["step"] == 30 and not (out / LOCK_NAME).exists()


# --- config mistakes of this issue ---------------------------------------------------------

@pytest.mark.parametrize("where", ["domain_a", "domain_b", "root", "eval"])
def test_output_dir_inside_an_image_folder_is_refused(image_dirs, tmp_path, where):
    """Its samples/*.png would be training (or held-out) images of the next run, e.g. a resume."""
    a, b = image_dirs
    extra, inside = [], {"domain_a": a, "domain_b": b}.get(where)
    if where == "root":
        (tmp_path / "data" / "trainA").mkdir(parents=True)
        (tmp_path / "data" / "trainB").mkdir()
        extra, inside = ["data.domain_a=", "data.domain_b=", f"data.root={tmp_path / 'data'}"], \
            tmp_path / "data" / "trainB"
    if where == "eval":
        (tmp_path / "held_out").mkdir()
        extra = ["eval.every=5", f"eval.domain_a={tmp_path / 'held_out'}", f"eval.domain_b={b}"]
        inside = tmp_path / "held_out"
    out = inside / "runs" / "x"
    with pytest.raises(ConfigError, match=rf"output_dir: '{out}' is invalid: it lies inside the "
                                          rf"image folder {inside} .*samples/\*\.png"):
        tiny_config(image_dirs, out, *extra)
    tiny_config(image_dirs, tmp_path / "beside", *extra)  # a sibling folder is fine


@pytest.mark.parametrize("typed", ["train.tracker=off", "train.tracker=no"])
def test_tracker_off_is_explained(image_dirs, tmp_path, typed):
    with pytest.raises(ConfigError) as info:
        tiny_config(image_dirs, tmp_path / "run", typed)
    assert str(info.value) == (
        "train.tracker: 'no' is invalid: not a known tracker (YAML reads unquoted off/no as "
        "false: quote it); expected none / wandb / tensorboard")


def test_an_interrupted_demo_writes_no_report_and_exits_nonzero(tmp_path, monkeypatch, capsys):
    """A SIGTERM mid-training ends `cyclestyle demo` with the --resume hint, exit code 1, and no
    evaluation of the half-trained model."""
    from cyclestyle.cli import main
    from cyclestyle.train import demo

    monkeypatch.setattr(demo, "TRAIN_PHOTOS", ("coffee",))
    original = Trainer.train_step

    def signalled(self, micro):
        if self.step == 1:
            os.kill(os.getpid(), signal.SIGTERM)  # caught by the trainer's StopRequested
        return original(self, micro)

    monkeypatch.setattr(Trainer, "train_step", signalled)
    code = main(["demo", "--output-dir", str(tmp_path), "--set", "train.max_steps=6", "--set",
                 "train.batch_size=1", "--set", "train.progress=false", "--set",
                 "data.num_workers=0", "--set", "train.precision=fp32"])
    err = capsys.readouterr().err
    assert code == 1, err
    assert "demo stopped by SIGTERM at step 2 of 6" in err and "--resume" in err
    assert not (tmp_path / "report.html").exists() and not (tmp_path / "results.json").exists()
    assert ckpt.load_checkpoint(tmp_path / "run")["step"] == 2  # what --resume continues from
