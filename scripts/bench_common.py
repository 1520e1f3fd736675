"""What the benchmark scripts share: the host description, a stand-in checkpoint and one case
per process.

Imported as `bench_common` (a script's own folder is first on sys.path).
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def host() -> dict:
    """What every benchmark report states about where it ran: the kernels torch dispatches to
    (and whether they were forced with ATEN_CPU_CAPABILITY), native bf16, threads and load."""
    import torch

    from cyclestyle.runtime import cpu_has_native_bf16

    capability = torch.backends.cpu.get_cpu_capability()
    return {"cpu_capability": capability, "native_bf16": cpu_has_native_bf16(capability),
            "emulated_capability": os.environ.get("ATEN_CPU_CAPABILITY") or None,
            "threads": torch.get_num_threads(), "cpu_count": os.cpu_count(),
            "machine": platform.machine(), "torch": torch.__version__,
            "cuda": torch.cuda.is_available(), "load_average": os.getloadavg()}


# What the statistics benchmarks (tiling, video) measure are norm statistics, and the demo's
# generator has none (norm: none): theirs is the demo's with InstanceNorm, as in the GPU configs.
WITH_INSTANCE_NORM = ("model.generator_args.norm=instance",)


def random_demo_checkpoint(folder: Path, overrides: tuple[str, ...] = ()) -> str:
    """configs/demo.yaml's generators (with `overrides`) and seeded random weights, saved as a
    run in `folder` (for smoke runs without a trained model: their numbers say little)."""
    import torch

    from cyclestyle.checkpoint import plain_state_dict, save_checkpoint
    from cyclestyle.models.factory import build_generators
    from cyclestyle.train.config import load_config

    config = load_config(REPO / "configs/demo.yaml", list(overrides))
    torch.manual_seed(0)
    g_ab, g_ba = build_generators(config.model)
    models = {"g_ab": plain_state_dict(g_ab), "g_ba": plain_state_dict(g_ba)}
    save_checkpoint({"config": config.to_dict(), "models": models}, folder, step=1, keep=1)
    return str(folder)


def in_subprocess(script: str | Path, spec: dict) -> dict:
    """Run `script --one SPEC_JSON` in a fresh process (its own time and peak memory) and
    return the JSON its last output line holds; exit with its stderr if it failed."""
    proc = subprocess.run([sys.executable, str(script), "--one", json.dumps(spec)],
                          capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        sys.exit(f"case {spec.get('kind', spec)} failed:\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])
