#!/usr/bin/env python
"""Crash safety under SIGKILL: kill `cyclestyle train` at random moments, resume, compare.

Trains configs/tiny.yaml (32x32 synthetic images, a checkpoint every 2 steps, keep 2) as
`python -m cyclestyle.cli train` subprocesses and kills each with SIGKILL: at a random point of
start-up, at a random point of a random step, or the moment a checkpoint temp file appears
(a kill during a write). After every kill each checkpoint in the folder must load; then the
run is resumed with --resume, which must continue from the newest checkpoint. When the kills
are done the last resume trains to the end, and its parameters must be bit-identical to an
uninterrupted run of the same config (started alongside; CPU kernels are deterministic).

    .venv/bin/python scripts/fault_inject.py --out fault_inject.json            # 20 kills
    .venv/bin/python scripts/fault_inject.py --kills 4 --write-kills 1 --max-steps 10

Prints and writes a JSON report; exits 1 if any check failed.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from cyclestyle import checkpoint as ckpt

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "configs" / "tiny.yaml"
TEMP_FILE = re.compile(r"^\..+\.tmp$")  # atomic writes' temp files: .step_00000004.pt.x1y2.tmp
RESUMED = re.compile(r"resuming from \S+ \(step (\d+)\)")
STARTUP_KILL_CHANCE = 0.15  # of the non-write kills, the share aimed at start-up


@dataclass
class Kill:
    mode: str  # "startup", "step" or "write"
    seconds_after_launch: float
    during_write: bool  # a checkpoint temp file was left behind
    last_step_done: int  # by the killed process (from metrics.jsonl); -1 if none
    newest_checkpoint: int  # step of the newest checkpoint after the kill; 0 if none
    steps_lost: int
    checkpoints_loaded: list[str]


@dataclass
class Report:
    kills: int = 0
    kills_during_write: int = 0
    kills_during_startup: int = 0
    resumes: int = 0
    resumes_verified: int = 0  # the log names the step resumed from, and it is the newest
    resume_failures: list[str] = field(default_factory=list)
    unreadable_checkpoints: list[str] = field(default_factory=list)
    checkpoint_files_seen: int = 0
    checkpoint_loads: int = 0  # every checkpoint present, loaded after every kill and at the end
    max_steps_lost: int = 0
    temp_files_left_at_end: int = 0
    final_step: int = 0
    params_equal: bool = False
    wall_time_s: float = 0.0
    config: dict = field(default_factory=dict)
    details: list[dict] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return (self.params_equal and not self.resume_failures and not self.unreadable_checkpoints
                and self.temp_files_left_at_end == 0)


# ---- set-up ---------------------------------------------------------------------------------

def write_images(folder: Path, count: int, seed: int) -> Path:
    """Small deterministic PNG/JPEG images of mixed sizes."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(count):
        h, w = ((40, 48), (36, 36), (50, 34))[i % 3]
        yy, xx = np.mgrid[0:h, 0:w]
        pixels = (rng.uniform(0, 255, 3) + 80 * np.sin(xx[..., None] / rng.uniform(2, 8)
                                                        + np.arange(3))
                  + 60 * np.cos(yy[..., None] / rng.uniform(2, 8))) % 255
        Image.fromarray(pixels.astype("uint8")).save(folder / f"img_{i:02d}.{'png' if i % 2 else 'jpg'}")
    return folder


def train_args(data: Path, output_dir: Path, max_steps: int, checkpoint_every: int) -> list[str]:
    sets = [f"data.domain_a={data / 'A'}", f"data.domain_b={data / 'B'}", f"output_dir={output_dir}",
            f"train.max_steps={max_steps}", f"train.checkpoint_every={checkpoint_every}",
            "train.keep_checkpoints=2", "train.log_every=1", "train.progress=false",
            "train.cpu=true"]
    return ["train", str(TINY), *[a for s in sets for a in ("--set", s)]]


def launch(args: list[str], log_path: Path) -> subprocess.Popen:
    # One thread per process: faster on a small loaded machine, and the same in every run.
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    with log_path.open("w") as log:
        return subprocess.Popen([sys.executable, "-m", "cyclestyle.cli", *args], env=env,
                                stdout=log, stderr=subprocess.STDOUT, cwd=REPO)


# ---- observing a run ------------------------------------------------------------------------

def temp_files(output_dir: Path) -> list[str]:
    folder = ckpt.checkpoint_dir(output_dir)
    try:
        return [e.name for e in os.scandir(folder) if TEMP_FILE.match(e.name)]
    except FileNotFoundError:
        return []


def rows_logged(metrics: Path, offset: int) -> list[dict]:
    """metrics.jsonl rows after byte `offset` (a line cut by a kill is ignored)."""
    if not metrics.exists():
        return []
    with metrics.open("rb") as f:
        f.seek(offset)
        lines = f.read().decode(errors="replace").split("\n")
    rows = []
    for line in lines[:-1]:  # the last piece has no newline yet, or is empty
        with contextlib.suppress(ValueError):
            rows.append(json.loads(line))
    return [r for r in rows if "step" in r]


def check_all_checkpoints(output_dir: Path, report: Report, seen: set[str]) -> list[str]:
    """Load every checkpoint in the folder; record any that does not load."""
    loaded = []
    folder = ckpt.checkpoint_dir(output_dir)
    for path in ckpt.list_checkpoints(output_dir) + [p for p in [folder / ckpt.BEST_NAME] if p.exists()]:
        seen.add(path.name)
        report.checkpoint_loads += 1
        try:
            ckpt.load_checkpoint(path)
            loaded.append(path.name)
        except Exception as err:  # any failure is a finding, reported not raised
            report.unreadable_checkpoints.append(f"{path.name}: {err}")
    return loaded


# ---- one kill -------------------------------------------------------------------------------

def wait_and_kill(proc: subprocess.Popen, mode: str, rng: random.Random, output_dir: Path,
                  offset: int, start_step: int, timing: dict) -> float | None:
    """Kill `proc` at a moment chosen by `mode`; None if it finished first.

    startup: a uniform moment in the (estimated) start-up; step: reach a step 1-3 past the
    resume point, then a uniform moment within the next step; write: as soon as a new
    checkpoint temp file appears."""
    metrics, old_temps = output_dir / "metrics.jsonl", set(temp_files(output_dir))
    launched = time.perf_counter()
    fire_at = launched + rng.uniform(0, timing["startup"]) if mode == "startup" else None
    target, startup_measured = start_step + rng.randint(1, 3), False
    while proc.poll() is None and time.perf_counter() < launched + 600:
        now = time.perf_counter()
        if mode == "write" and set(temp_files(output_dir)) - old_temps:
            break
        if mode == "step" and fire_at is None:
            rows = rows_logged(metrics, offset)
            if len(rows) == 1 and not startup_measured:  # the next start-up kills aim inside it
                timing["startup"], startup_measured = now - launched, True
            if rows and rows[-1]["step"] >= target:
                step_seconds = 1 / max(rows[-1]["steps_per_s"], 1e-3)
                fire_at = now + rng.uniform(0, step_seconds)
        if fire_at is not None and now >= fire_at:
            break
        time.sleep(0.0005 if mode == "write" else 0.01)
    if proc.poll() is not None:
        return None
    proc.kill()
    proc.wait()
    return time.perf_counter() - launched


def one_kill(i: int, mode: str, rng: random.Random, args: list[str], output_dir: Path,
             logs: Path, report: Report, seen: set[str], timing: dict) -> bool:
    """Launch (resuming), kill, check; False if the run finished before the kill."""
    metrics = output_dir / "metrics.jsonl"
    offset = metrics.stat().st_size if metrics.exists() else 0
    start_step, temps_before = newest_step(output_dir), set(temp_files(output_dir))
    log_path = logs / f"run_{i:02d}.log"
    proc = launch(args + ["--resume"], log_path)
    seconds = wait_and_kill(proc, mode, rng, output_dir, offset, start_step, timing)
    if i > 0:
        verify_resume(log_path, start_step, report, killed=seconds is not None)
    if seconds is None:
        return False
    during_write = bool(set(temp_files(output_dir)) - temps_before)
    loaded = check_all_checkpoints(output_dir, report, seen)
    rows = rows_logged(metrics, offset)
    last, newest = (rows[-1]["step"] if rows else -1), newest_step(output_dir)
    kill = Kill(mode, round(seconds, 3), during_write, last, newest, max(0, last - newest), loaded)
    report.details.append(asdict(kill))
    report.kills += 1
    report.kills_during_write += during_write
    report.kills_during_startup += not rows
    report.max_steps_lost = max(report.max_steps_lost, kill.steps_lost)
    print(f"kill {report.kills:2d} ({mode:7s}) at {seconds:6.2f} s: last step {last}, newest "
          f"checkpoint {newest}, during write: {during_write}", flush=True)
    return True


def newest_step(output_dir: Path) -> int:
    found = ckpt.list_checkpoints(output_dir)
    return int(found[-1].stem.split("_")[1]) if found else 0


def verify_resume(log_path: Path, expected: int, report: Report, killed: bool) -> None:
    """A resumed run must name the newest checkpoint's step, or fail only by being killed."""
    report.resumes += 1
    text = log_path.read_text(errors="replace")
    if not killed and "Traceback" in text:
        report.resume_failures.append(f"{log_path.name}: crashed\n{text[-2000:]}")
        return
    match = RESUMED.search(text)
    if match:
        if int(match.group(1)) == expected:
            report.resumes_verified += 1
        else:
            report.resume_failures.append(f"{log_path.name}: resumed from step "
                                          f"{match.group(1)}, newest checkpoint was {expected}")
    elif expected == 0 and "no checkpoint" in text:
        report.resumes_verified += 1
    elif "error" in text.lower() and not killed:
        report.resume_failures.append(f"{log_path.name}: {text[-2000:]}")


# ---- the whole experiment -------------------------------------------------------------------

def final_params(output_dir: Path) -> tuple[int, dict[str, torch.Tensor]]:
    state = ckpt.load_checkpoint(output_dir)
    return state["step"], {f"{n}.{k}": v for n, sd in state["models"].items() for k, v in sd.items()}


def run(workdir: Path, kills: int, write_kills: int, max_steps: int, checkpoint_every: int,
        seed: int) -> Report:
    start = time.perf_counter()
    rng = random.Random(seed)
    data, logs = workdir / "data", workdir / "logs"
    write_images(data / "A", 5, seed=1), write_images(data / "B", 4, seed=2)
    logs.mkdir(parents=True, exist_ok=True)
    killed_dir, clean_dir = workdir / "killed", workdir / "clean"
    report = Report(config={"kills": kills, "write_kills": write_kills, "max_steps": max_steps,
                            "checkpoint_every": checkpoint_every, "keep_checkpoints": 2,
                            "seed": seed, "image_size": 32, "omp_num_threads": 1})
    clean = launch(train_args(data, clean_dir, max_steps, checkpoint_every), logs / "clean.log")
    args = train_args(data, killed_dir, max_steps, checkpoint_every)
    writes = set(rng.sample(range(kills), min(write_kills, kills)))
    modes = ["write" if i in writes else
             ("startup" if rng.random() < STARTUP_KILL_CHANCE else "step") for i in range(kills)]
    timing = {"startup": 8.0, "step": 1.0}  # rough, for the random delays
    seen: set[str] = set()
    for i, mode in enumerate(modes):
        if not one_kill(i, mode, rng, args, killed_dir, logs, report, seen, timing):
            print(f"run finished before kill {i + 1}; raise --max-steps", flush=True)
            break
    final_log = logs / "final.log"
    expected = newest_step(killed_dir)
    proc = launch(args + ["--resume"], final_log)
    finished = proc.wait(timeout=1800) == 0
    verify_resume(final_log, expected, report, killed=False)
    if not finished:
        report.resume_failures.append(f"final run failed:\n{final_log.read_text()[-2000:]}")
    if clean.wait(timeout=1800) != 0:
        report.resume_failures.append(f"reference run failed:\n{(logs / 'clean.log').read_text()[-2000:]}")
    check_all_checkpoints(killed_dir, report, seen)
    report.checkpoint_files_seen = len(seen)
    report.temp_files_left_at_end = len(temp_files(killed_dir))
    if finished and clean.returncode == 0:
        step_a, a = final_params(killed_dir)
        step_b, b = final_params(clean_dir)
        report.final_step = step_a
        report.params_equal = (step_a == step_b == max_steps and a.keys() == b.keys()
                               and all(torch.equal(a[k], b[k]) for k in a))
    report.wall_time_s = round(time.perf_counter() - start, 1)
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--write-kills", type=int, default=7,
                        help="how many of the kills wait for a checkpoint write (default: 7)")
    parser.add_argument("--max-steps", type=int, default=80,
                        help="must outlast the kills: each one lets a run make 0-4 steps")
    parser.add_argument("--checkpoint-every", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", help="keep runs and logs here (default: a temp folder)")
    parser.add_argument("--out", help="write the JSON report here")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="fault_inject_") as tmp:
        workdir = Path(args.workdir) if args.workdir else Path(tmp)
        report = run(workdir, args.kills, args.write_kills, args.max_steps,
                     args.checkpoint_every, args.seed)
    summary = {k: v for k, v in asdict(report).items() if k != "details"} | {"ok": report.ok}
    print(json.dumps(summary, indent=2))
    if args.out:
        Path(args.out).write_text(json.dumps(asdict(report) | {"ok": report.ok}, indent=2) + "\n")
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
