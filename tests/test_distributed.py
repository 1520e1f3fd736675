"""Two CPU processes through `accelerate launch` form one DDP job that resumes exactly."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from cyclestyle import checkpoint as ckpt

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def train(dirs, output_dir, processes: int, *overrides: str, resume: bool = False) -> str:
    args = ["train", str(REPO / "configs" / "tiny.yaml"), "--set", f"data.domain_a={dirs[0]}",
            "--set", f"data.domain_b={dirs[1]}", "--set", f"output_dir={output_dir}",
            "--set", "train.progress=false", "--set", "train.log_every=1"]
    for item in overrides:
        args += ["--set", item]
    if resume:
        args.append("--resume")
    if processes == 1:
        cmd = [sys.executable, "-m", "cyclestyle.cli", *args]
    else:
        # `accelerate launch --cpu --num_processes 2` starts ONE process; this is the way to get 2.
        cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu",
               "--num_processes", str(processes), "--num_machines", "1", "--mixed_precision", "no",
               "--dynamo_backend", "no", "--main_process_port", str(free_port()),
               "-m", "cyclestyle.cli", *args]
    env = {**os.environ, "ACCELERATE_USE_CPU": "true", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout + proc.stderr


def params(output_dir) -> dict[str, torch.Tensor]:
    state = ckpt.load_checkpoint(output_dir)
    return {f"{n}.{k}": v for n, sd in state["models"].items() for k, v in sd.items()}


def update_signs(output_dir, init) -> torch.Tensor:
    return torch.cat([(v - init[k]).sign().flatten() for k, v in params(output_dir).items()
                      if v.is_floating_point()])


@pytest.mark.parametrize("objective", ["cyclegan", "cut"])
def test_two_processes_are_one_job_over_different_images(image_dirs, tmp_path, objective):
    """Step 1 with 2 processes x batch 1 must follow the gradient of both images, like one
    process with batch 2: DDP averaged two *different* samples. (Adam's first step moves each
    weight by lr * sign(grad), so agreement of update signs compares the gradients.) CUT calls
    G_AB's encoder outside its DDP wrapper: its gradients must be averaged all the same."""
    common = ["train.max_steps=1", "train.pool_size=0", f"model.objective={objective}"]
    train(image_dirs, tmp_path / "init", 1, "train.max_steps=1", "train.lr=1e-30",
          f"model.objective={objective}")
    init = params(tmp_path / "init")
    train(image_dirs, tmp_path / "ddp", 2, *common, "train.batch_size=1")
    train(image_dirs, tmp_path / "big", 1, *common, "train.batch_size=2")
    train(image_dirs, tmp_path / "one", 1, *common, "train.batch_size=1")
    ddp, big, one = (update_signs(tmp_path / d, init) for d in ("ddp", "big", "one"))
    agree_big = (ddp == big).float().mean().item()
    agree_one = (ddp == one).float().mean().item()
    assert agree_big > 0.97, agree_big
    assert agree_one < agree_big - 0.05, (agree_one, agree_big)  # rank 1 added its own image
    rows = [json.loads(x) for x in (tmp_path / "ddp" / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["world_size"] == 2
    assert ckpt.load_checkpoint(tmp_path / "ddp")["world_size"] == 2
    # Only the main process took output_dir's lock (rank 1 would have found it held), and it
    # was released at the end.
    assert not (tmp_path / "ddp" / ".cyclestyle.lock").exists()


def test_two_process_resume_is_exact(image_dirs, tmp_path):
    common = ["train.max_steps=4", "train.checkpoint_every=2", "train.keep_checkpoints=5",
              "train.pool_size=2"]
    train(image_dirs, tmp_path / "full", 2, *common)
    (tmp_path / "half" / "checkpoints").mkdir(parents=True)
    shutil.copy(tmp_path / "full" / "checkpoints" / "step_00000002.pt",
                tmp_path / "half" / "checkpoints")
    log = train(image_dirs, tmp_path / "half", 2, *common, resume=True)
    assert "resuming from" in log
    full, half = params(tmp_path / "full"), params(tmp_path / "half")
    for key in full:
        assert torch.equal(full[key], half[key]), key
