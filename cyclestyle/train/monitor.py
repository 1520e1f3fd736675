"""What the trainer watches besides its losses: its output_dir, non-finite steps, held-out FID,
and the trackers.

Kept apart from `trainer.py` so the loop stays readable: `RunLock` keeps a second run out of an
output_dir in use, `NonFiniteGuard` decides whether a step's update may be applied,
`build_training_fid` turns the `eval` config section into a `cyclestyle.metrics.TrainingFID`
hook, and `init_tracker` / `log_images` feed wandb or TensorBoard.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
import uuid
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from accelerate import Accelerator
from PIL import Image
from torch.nn.utils import get_total_norm

from cyclestyle.options import ConfigError
from cyclestyle.train.config import ExperimentConfig

log = logging.getLogger(__name__)


class NonFiniteLossError(RuntimeError):
    """Training produced NaN/inf losses for `train.max_bad_steps` steps in a row."""


class NonFiniteGuard:
    """Skip the update of a step whose losses or gradients are not all finite; stop after K in
    a row.

    Gradients are checked as well as losses: a finite loss can still have a NaN gradient (it
    did, for a solid-colour image, see `cyclestyle.models.layers.stop_flat_gradient`), and Adam
    would write that NaN into every weight. The check reads one small tensor back from the
    device per optimizer (the only host sync in the step) and, with several processes, agrees
    on it across them: every rank must skip together or the replicas drift apart.
    """

    def __init__(self, accelerator: Accelerator, max_bad_steps: int) -> None:
        self.accelerator = accelerator
        self.max_bad_steps = max_bad_steps
        self.consecutive = 0
        self.total = 0
        self.bad_gradients: str | None = None  # whose gradients failed the last check, if any

    @property
    def enabled(self) -> bool:
        return self.max_bad_steps > 0

    def all_finite(self, losses: dict[str, torch.Tensor],
                   parameters: Iterable[torch.Tensor] = (), owner: str = "") -> bool:
        """Whether `losses` and the `.grad` of `parameters` (those of `owner`, e.g. "G") are all
        finite; call it after backward and before the optimizer step."""
        if not self.enabled:
            return True
        flags = [torch.isfinite(torch.stack([v.detach().float() for v in losses.values()])).all()]
        grads = [p.grad for p in parameters if p.grad is not None]
        if grads:  # the largest |gradient|: NaN and inf come through, nothing can overflow
            flags.append(torch.isfinite(get_total_norm(grads, float("inf"))).to(flags[0].device))
        bad = ~torch.stack(flags)
        if self.accelerator.num_processes > 1:
            bad = self.accelerator.reduce(bad.float(), reduction="sum") > 0
        bad_loss, *bad_grad = bad.tolist()
        self.bad_gradients = (owner or "the model") if not bad_loss and any(bad_grad) else None
        return not (bad_loss or any(bad_grad))

    def record(self, step: int, losses: dict[str, torch.Tensor] | None,
               files: Sequence[str] = ()) -> None:
        """`losses` of a skipped step, or None for a good one; raises after K bad in a row.

        `files` are the images of the step's batch, named in the warning and the error."""
        if losses is None:
            self.consecutive = 0
            return
        self.consecutive += 1
        self.total += 1
        if self.bad_gradients:
            problem = f"non-finite gradients of {self.bad_gradients} from finite losses"
        else:
            names = [k for k, v in losses.items() if not torch.isfinite(v.detach()).all()]
            problem = f"non-finite loss ({', '.join(names) or 'on another process'})"
        batch = _shorten(files)
        log.warning("step %d: %s; update skipped (%d in a row, %d in all); batch: %s",
                    step, problem, self.consecutive, self.total, batch)
        if self.consecutive >= self.max_bad_steps:
            raise NonFiniteLossError(
                f"training stopped at step {step}: {self.consecutive} steps in a row had "
                f"non-finite values (last: {problem}; batch: {batch}); no update was applied "
                "for them and no checkpoint was written after the last good one. "
                + (_GRADIENT_ADVICE if self.bad_gradients else _LOSS_ADVICE)
                + "; raise train.max_bad_steps to tolerate longer bad streaks.")

    def state_dict(self) -> dict[str, int]:
        return {"consecutive": self.consecutive, "total": self.total}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.consecutive, self.total = state["consecutive"], state["total"]


_LOSS_ADVICE = "Try a lower train.lr, train.precision=fp32, or check the images"
# A finite loss with a non-finite gradient is a property of the inputs and the network, not of
# the step size: the learning rate only scales an update that was never applied.
_GRADIENT_ADVICE = ("The losses were finite, so train.lr is not the cause: check the images of "
                    "the batch (a solid-colour, tiny or corrupt-looking file) or try "
                    "train.precision=fp32")


def _shorten(files: Sequence[str], shown: int = 4) -> str:
    listed = ", ".join(str(f) for f in files[:shown])
    return (listed + f" and {len(files) - shown} more" if len(files) > shown else listed) or "?"


def assert_finite_parameters(models: dict[str, torch.nn.Module], step: int) -> None:
    """Refuse to write a checkpoint whose weights are already NaN/inf: it would rotate out good ones."""
    for name, model in models.items():
        for pname, param in model.named_parameters():
            if not torch.isfinite(param).all():
                raise NonFiniteLossError(
                    f"step {step}: parameter {name}.{pname} is not finite; not writing a "
                    "checkpoint so the earlier ones stay intact. Resume from the last good one "
                    "with a lower train.lr or train.precision=fp32.")


def build_training_fid(config: ExperimentConfig, device: torch.device):
    """The held-out FID/KID hook of the `eval` section, or None when `eval.every` is 0."""
    ec = config.eval
    if not ec.every:
        return None
    from cyclestyle.metrics import TrainingFID

    held_out_a, held_out_b = ec.held_out_dirs(config.data)
    log.info("eval: FID/KID of G_AB(%s) against %s and of G_BA(%s) against %s every %d steps; "
             "best.pt by the %s FID", held_out_a, held_out_b, held_out_b, held_out_a, ec.every,
             ec.best)
    return TrainingFID(held_out_a, held_out_b, every=ec.every,
                       extractor=ec.inception_weights or None, resize=ec.resize,
                       image_size=config.data.image_size, max_images=ec.max_images or None,
                       batch_size=ec.batch_size, seed=config.train.seed, device=device,
                       best=ec.best)


def init_tracker(accelerator: Accelerator, config: ExperimentConfig) -> None:
    """Start wandb/tensorboard; wandb without an API key logs offline instead of failing."""
    tracker, output_dir = config.train.tracker, config.output_dir
    if tracker == "none":
        return
    if tracker == "wandb" and not os.environ.get("WANDB_API_KEY") and not os.environ.get("WANDB_MODE"):
        os.environ["WANDB_MODE"] = "offline"  # no key: log locally, `wandb sync` later
        log.warning("wandb: no WANDB_API_KEY; logging offline under %s", output_dir)
    accelerator.init_trackers(config.train.project, config=_flatten(config.to_dict()),
                              init_kwargs={"wandb": {"dir": str(output_dir)}})


def log_images(accelerator: Accelerator, images: dict[str, Image.Image], step: int) -> None:
    """Images (sample grids) to wandb/TensorBoard at `step`, beside that step's scalars.

    accelerate's trackers take images in their own shapes: TensorBoard a batch array, wandb a
    list of images per key."""
    for tracker in accelerator.trackers:
        if tracker.name == "tensorboard":
            batches = {key: np.asarray(image.convert("RGB"))[None] for key, image in images.items()}
            tracker.log_images(batches, step=step, dataformats="NHWC")  # (1, H, W, 3) uint8
        elif tracker.name == "wandb":
            tracker.log_images({key: [image] for key, image in images.items()}, step=step)


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in d.items():
        if isinstance(value, dict) and value:
            out |= _flatten(value, f"{prefix}{key}.")
        else:
            out[prefix + key] = value if isinstance(value, (int, float, str, bool)) else str(value)
    return out


LOCK_NAME = ".cyclestyle.lock"


class RunLock:
    """`output_dir/.cyclestyle.lock`: at most one training run writes to an output_dir.

    Without it two runs started on one output_dir both pass the "already holds checkpoints"
    check until the first checkpoint exists, then overwrite each other's files. The lock file is
    created atomically (O_CREAT | O_EXCL) and holds the owner's PID and host. A lock whose PID
    is gone on this host was left by a killed run: it is taken over with a warning. A lock of a
    live process, or of another host (whose processes cannot be checked), is a ConfigError.
    """

    _held: ClassVar[set[Path]] = set()  # locks held by this process, one per output_dir

    def __init__(self, output_dir: str | Path) -> None:
        self.path = Path(output_dir) / LOCK_NAME
        self.owner = {"pid": os.getpid(), "host": socket.gethostname(), "token": uuid.uuid4().hex}
        self.held = False

    def acquire(self) -> RunLock:
        if self.held:
            return self
        self.path.parent.mkdir(parents=True, exist_ok=True)
        key = self.path.resolve()
        if key in RunLock._held:
            raise self._busy(self.owner, "another Trainer of this process is using it")
        deadline = time.monotonic() + 15  # waits only on a lock being written or taken over
        while time.monotonic() < deadline:
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                self._take_over_if_stale()
                continue
            with os.fdopen(fd, "w") as f:
                json.dump(self.owner | {"started": time.strftime("%Y-%m-%dT%H:%M:%S")}, f)
            self.held = True
            RunLock._held.add(key)
            return self
        raise ConfigError(f"output_dir: could not lock {self.path.parent}: {self.path} keeps "
                          "reappearing; is another run starting there?")

    def release(self) -> None:
        """Remove the lock file if it is still ours (never another run's)."""
        if not self.held:
            return
        self.held = False
        RunLock._held.discard(self.path.resolve())
        if _read_owner(self.path).get("token") == self.owner["token"]:
            self.path.unlink(missing_ok=True)

    def _take_over_if_stale(self) -> None:
        owner = _read_owner(self.path)
        if not owner:  # being written by its owner right now, or left empty by a kill
            if time.time() - _mtime(self.path) < 5:
                time.sleep(0.1)
                return
        elif _alive(owner):
            raise self._busy(owner, "a run is using it")
        # Only one process may replace a stale lock: whoever creates the takeover file first,
        # and it re-reads the lock before deleting it (the lock may be fresh by then).
        takeover = self.path.with_name(LOCK_NAME + ".takeover")
        try:
            os.close(os.open(takeover, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
        except FileExistsError:
            if time.time() - _mtime(takeover) > 5:  # its owner was killed mid-takeover
                takeover.unlink(missing_ok=True)
            time.sleep(0.1)
            return
        try:
            if _read_owner(self.path) == owner:
                log.warning("output_dir %s: taking over the lock of PID %s on %s, which no longer "
                            "runs (a killed or crashed run)", self.path.parent,
                            owner.get("pid", "?"), owner.get("host", "?"))
                self.path.unlink(missing_ok=True)
        finally:
            takeover.unlink(missing_ok=True)

    def _busy(self, owner: dict[str, Any], why: str) -> ConfigError:
        return ConfigError(
            f"output_dir {self.path.parent} is locked by PID {owner.get('pid')} on host "
            f"{owner.get('host')} ({why}; lock file {self.path}). Two runs in one output_dir "
            "would overwrite each other's checkpoints: wait for that run, choose another "
            "output_dir, or delete the lock file if that process is really gone.")


def _read_owner(path: Path) -> dict[str, Any]:
    try:
        owner = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return owner if isinstance(owner, dict) else {}


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return time.time()


def _alive(owner: dict[str, Any]) -> bool:
    """Whether the lock's owner may still run: always, unless it is a dead PID on this host."""
    pid = owner.get("pid")
    if owner.get("host") != socket.gethostname() or not isinstance(pid, int) or os.name == "nt":
        return True  # another machine's process (or Windows, where os.kill(pid, 0) kills)
    if pid == os.getpid():  # a reused PID: this process holds no lock there (RunLock._held)
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True
