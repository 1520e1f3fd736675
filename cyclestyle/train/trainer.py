"""The CycleGAN trainer: G step with the discriminators frozen, then D step with a history pool.

Runs through `accelerate`, so the same loop serves one CPU, one GPU, or many processes
(`accelerate launch`). Every random choice is a function of the seed and the step, and every
piece of state lives in the checkpoint, so `--resume` continues the interrupted run exactly.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
import weakref
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState
from accelerate.utils import gather_object, set_seed
from torch import nn

from cyclestyle import checkpoint as ckpt
from cyclestyle.atomic import write_text_atomic
from cyclestyle.models.factory import Networks, build_networks
from cyclestyle.models.layers import channels_last_is_safe, instance_norms_as_group_norms
from cyclestyle.options import ConfigError
from cyclestyle.runtime import (
    ACCELERATE_NAMES,
    StopRequested,
    available_cores,
    describe_precision,
    limit_threads,
    resolve_precision,
    retain_freed_memory,
)
from cyclestyle.train.augment import diff_augment
from cyclestyle.train.config import ExperimentConfig, resolve_epochs
from cyclestyle.train.data import (
    UnpairedDataset,
    build_dataloader,
    crop_to_common_size,
    find_domain_images,
)
from cyclestyle.train.diagnostics import Diagnostics
from cyclestyle.train.ema import ModelEMA
from cyclestyle.train.losses import GANLoss, PerceptualLoss
from cyclestyle.train.monitor import (
    NonFiniteGuard,
    RunLock,
    assert_finite_parameters,
    build_training_fid,
    init_tracker,
    log_images,
)
from cyclestyle.train.objective import (
    contrastive_generator_losses,
    discriminator_loss,
    generator_losses,
)
from cyclestyle.train.pool import ImagePool
from cyclestyle.train.progress import TrainingProgress
from cyclestyle.train.report import write_report
from cyclestyle.train.samples import SampleWriter

log = logging.getLogger(__name__)


def lr_factor(step: int, config: ExperimentConfig) -> float:
    """Constant, then linear decay to zero at max_steps (CycleGAN's 100 + 100 epochs)."""
    start, end = config.train.decay_start_step, config.train.max_steps
    if step < start or end <= start:
        return 1.0
    return max(0.0, (end - step) / (end - start))


class Trainer:
    """One training run in `config.output_dir`, which it locks (`RunLock`) from construction to
    the end of `fit`.

    `stopped_by` is the signal that ended `fit` early (a checkpoint was written; continue with
    resume=True), or None when it ran to `train.max_steps` or has not run."""

    def __init__(self, config: ExperimentConfig, resume: str | Path | bool | None = None):
        self.config = config
        self.output_dir = Path(config.output_dir)
        self.stopped_by: str | None = None
        self.lock = RunLock(self.output_dir)
        weakref.finalize(self, self.lock.release)  # a Trainer dropped without fit(), or exit
        try:
            self._set_up(resume)
        except BaseException:
            self.lock.release()
            raise

    def _set_up(self, resume: str | Path | bool | None) -> None:
        config, tc = self.config, self.config.train
        # accelerate keeps its settings (mixed precision, CPU) in a process-wide singleton that
        # refuses changes; clear them so several trainers can run in one process (tests,
        # notebooks). The distributed state (PartialState) is kept.
        AcceleratorState._reset_state(reset_partial_state=False)
        self.precision, self.precision_reason = resolve_precision(tc.precision, _device(tc.cpu))
        self.accelerator = Accelerator(
            mixed_precision=ACCELERATE_NAMES[self.precision], cpu=tc.cpu,
            log_with=None if tc.tracker == "none" else tc.tracker,
            project_dir=str(self.output_dir))
        acc = self.accelerator
        self.progress = TrainingProgress(tc.progress and acc.is_local_main_process,
                                         speak=acc.is_local_main_process)
        if acc.is_main_process:
            log.info("precision: %s", describe_precision(self.precision, self.precision_reason))
        if acc.device.type == "cpu":  # glibc otherwise re-faults the activations in every step
            retain_freed_memory()
            log.info("compute threads: %d (cores available to this process: %d)",
                     limit_threads(), available_cores())  # 0.85-0.99x -> 1.04-1.07x the reference's fp32 speed
        self._lock_output_dir()  # before looking at its checkpoints: another run may write them
        if not resume and ckpt.list_checkpoints(self.output_dir):
            raise ConfigError(
                f"output_dir {self.output_dir} already holds checkpoints of an earlier run "
                f"(newest: {ckpt.list_checkpoints(self.output_dir)[-1].name}); a new run would "
                "overwrite them. Continue it with --resume, or choose another output_dir.")
        resume_state = ckpt.load_for_resume(resume, self.output_dir, config.model)
        set_seed(tc.seed)  # same initial weights in every process
        self.nets = build_networks(config.model)
        self.channels_last = self._use_channels_last()
        self.gan_loss = GANLoss(config.loss.gan_mode)
        self.perceptual = self._build_perceptual().to(acc.device)
        present = self.nets.present()
        params_g = [p for name in ("g_ab", "g_ba", "nce_heads") if name in present
                    for p in present[name].parameters()]
        params_d = [p for name in ("d_a", "d_b") if name in present for p in present[name].parameters()]
        adam = {"lr": tc.lr, "betas": tuple(tc.betas)}
        if acc.device.type == "cuda":
            adam["fused"] = True
        self.opt_g = torch.optim.Adam(params_g, **adam)
        self.opt_d = torch.optim.Adam(params_d, **adam)
        self.sched_g = torch.optim.lr_scheduler.LambdaLR(self.opt_g, self._lr_lambda)
        self.sched_d = torch.optim.lr_scheduler.LambdaLR(self.opt_d, self._lr_lambda)
        seed = tc.seed * 1000 + acc.process_index
        self.pool_a, self.pool_b = ImagePool(tc.pool_size, seed), ImagePool(tc.pool_size, seed + 1)
        self.step = 0
        self.skipped_images = 0
        self.guard = NonFiniteGuard(acc, tc.max_bad_steps)
        self.diagnostics = Diagnostics(tc.log_every)
        # Held-out FID/KID is computed by the main process only; the others wait for it.
        with self.progress.status("reading held-out images and their features",
                                  when=bool(config.eval.every)):
            self.training_fid = (build_training_fid(config, acc.device) if acc.is_main_process
                                 else None)
        if resume_state is not None:
            self._load_state(resume_state)
        present = self.nets.present()
        *prepared, self.opt_g, self.opt_d = acc.prepare(*present.values(), self.opt_g, self.opt_d)
        self.nets = Networks(**dict(zip(present, prepared)))
        # In the G step the discriminators are frozen and only pass gradients to the fakes, so
        # they are called without their DDP wrapper: no gradient sync is due for them there.
        self.d_a_plain, self.d_b_plain = (self._plain(self.nets.d_a), self._plain(self.nets.d_b))
        self.ema = self._build_ema(resume_state)
        if tc.compile:
            self._compile()
        with self.progress.status("listing the training images"):
            self.dataset = self._build_dataset()
        self.samples = SampleWriter(self.output_dir, self.dataset,
                                    config.eval.held_out_dirs(config.data, required=False),
                                    config.data.image_size, acc.device)

    # --- set-up ------------------------------------------------------------------------------

    def _plain(self, net: nn.Module | None) -> nn.Module | None:
        return None if net is None else self.accelerator.unwrap_model(net)

    def _build_ema(self, resume_state: dict[str, Any] | None) -> dict[str, ModelEMA]:
        """EMA copies of both generators (train.ema_decay > 0), resumed exactly."""
        if not self.config.train.ema_decay:
            return {}
        unwrap = self.accelerator.unwrap_model
        ema = {name: ModelEMA(unwrap(getattr(self.nets, name)), self.config.train.ema_decay)
               for name in ("g_ab", "g_ba") if getattr(self.nets, name) is not None}
        saved = (resume_state or {}).get("ema") or {}
        for name, average in ema.items():
            if saved.get(name) is not None:
                average.load_state_dict(saved[name])
        return ema

    def generators_for_inference(self) -> tuple[nn.Module, nn.Module | None]:
        """(G_AB, G_BA) as samples, evaluation and exports should see them: the EMA copies
        when train.ema_decay > 0, else the trained weights. G_BA is None under cut/fastcut."""
        if self.ema:
            return self.ema["g_ab"].module, self.ema["g_ba"].module if "g_ba" in self.ema else None
        return self._plain(self.nets.g_ab), self._plain(self.nets.g_ba)

    def _augment(self, x: torch.Tensor) -> torch.Tensor:
        return diff_augment(x, self.config.train.diff_augment)

    def _lr_lambda(self, step: int) -> float:
        return lr_factor(step, self.config)

    def _lock_output_dir(self) -> None:
        """The main process takes the lock; all processes fail together if it cannot."""
        acc, error = self.accelerator, None
        if acc.is_main_process:
            try:
                self.lock.acquire()
            except ConfigError as err:
                error = err
        if _any_process(acc, error):
            raise error or ConfigError(f"output_dir {self.output_dir} is locked by another run "
                                       "(see the main process's error)")

    def _use_channels_last(self) -> bool:
        if not self.config.train.channels_last:
            return False
        device, batch = self.accelerator.device, self.config.train.batch_size
        for name, net in self.nets.present().items():
            if name == "nce_heads":
                continue  # linear layers on sampled patches: no image layout
            if device.type == "cpu" or not channels_last_is_safe(net, device, batch):
                # On CPU InstanceNorm copies channels_last tensors to contiguous and back, and at
                # batch 1 its channels_last input gradients are wrong: compute the same
                # normalisation as a GroupNorm, whose gradients are right and which keeps the
                # layout (tests/test_improvements.py compares the gradients).
                instance_norms_as_group_norms(net)
            net.to(memory_format=torch.channels_last)
        return True

    def _build_perceptual(self) -> nn.Module:
        lc, objective = self.config.loss, self.config.model.objective
        if lc.lambda_perceptual > 0 and self.config.model.one_way:
            log.warning("loss.lambda_perceptual=%s is unused: it weighs the cycle's "
                        "reconstruction, and objective %s has none (loss.lambda_content compares "
                        "each translation with its source)", lc.lambda_perceptual, objective)
        if not lc.needs_vgg(objective):
            return nn.Identity()  # no VGG needed: don't ask for weights
        from cyclestyle.models.vgg import VGGFeatures

        return PerceptualLoss(VGGFeatures(lc.perceptual_layers, weights=lc.vgg_weights))

    def _compile(self) -> None:
        for name, net in self.nets.present().items():
            setattr(self.nets, name, torch.compile(net))
        self.d_a_plain, self.d_b_plain = (None if d is None else torch.compile(d)
                                          for d in (self.d_a_plain, self.d_b_plain))

    def _build_dataset(self) -> UnpairedDataset:
        dc, unreadable = self.config.data, []
        files_a, files_b = find_domain_images(dc.domain_a, dc.domain_b, dc.root, dc.split,
                                              unreadable=unreadable)
        self.unreadable_folders = len(unreadable)  # warned about by find_images, logged per row
        # train.epochs -> steps (a no-op when already resolved by the CLI); the schedule reads
        # train.max_steps lazily, so resolving here, before the first step, is in time.
        resolve_epochs(self.config, max(len(files_a), len(files_b)), self.accelerator.num_processes)
        return UnpairedDataset(files_a, files_b, dc.image_size, load_size=dc.resolved_load_size,
                               flip=dc.flip, seed=self.config.train.seed,
                               skip_bad_images=dc.skip_bad_images, max_pixels=dc.max_image_pixels,
                               preprocess=dc.preprocess)

    # --- state -------------------------------------------------------------------------------

    def process_state(self) -> dict[str, Any]:
        """What differs between processes: history pools, RNG streams, skipped-image counts."""
        return {
            "pools": {"a": self.pool_a.state_dict(), "b": self.pool_b.state_dict()},
            "rng": {"torch": torch.get_rng_state(),
                    "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []},
            "skipped_images": self.skipped_images,
        }

    def state_dict(self, process_states: list[dict[str, Any]] | None = None) -> dict[str, Any]:
        unwrap = self.accelerator.unwrap_model
        return {
            "config": self.config.to_dict(),
            "models": {name: ckpt.plain_state_dict(unwrap(net))
                       for name, net in self.nets.present().items()},
            "optimizers": {"g": self.opt_g.state_dict(), "d": self.opt_d.state_dict()},
            "schedulers": {"g": self.sched_g.state_dict(), "d": self.sched_d.state_dict()},
            "processes": process_states or [self.process_state()],  # in rank order
            "world_size": self.accelerator.num_processes,
            "nonfinite": self.guard.state_dict(),
            "eval": self.training_fid.state_dict() if self.training_fid else None,
            "ema": {name: e.state_dict() for name, e in self.ema.items()} or None,
        }

    def _load_state(self, state: dict[str, Any]) -> None:
        for name, net in self.nets.present().items():
            net.load_state_dict(state["models"][name])
        self.opt_g.load_state_dict(state["optimizers"]["g"])
        self.opt_d.load_state_dict(state["optimizers"]["d"])
        self.sched_g.load_state_dict(state["schedulers"]["g"])
        self.sched_d.load_state_dict(state["schedulers"]["d"])
        self.step = state["step"]
        if "nonfinite" in state:  # absent in checkpoints of cyclestyle < 0.2
            self.guard.load_state_dict(state["nonfinite"])
        if self.training_fid and state.get("eval"):
            self.training_fid.load_state_dict(state["eval"])
        rank, processes = self.accelerator.process_index, state["processes"]
        if len(processes) != self.accelerator.num_processes:
            log.warning("resuming a %d-process run with %d processes: training continues, but "
                        "not on exactly the images the original run would have drawn",
                        len(processes), self.accelerator.num_processes)
        mine = processes[rank % len(processes)]
        device = self.accelerator.device
        self.pool_a.load_state_dict(mine["pools"]["a"], device)
        self.pool_b.load_state_dict(mine["pools"]["b"], device)
        torch.set_rng_state(mine["rng"]["torch"])
        if mine["rng"]["cuda"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(mine["rng"]["cuda"])
        self.skipped_images = mine["skipped_images"]

    def save_checkpoint(self, best: bool = False) -> Path | None:
        """Every process takes part (its pools and RNG go in); the main one writes the file.

        `best=True` writes checkpoints/best.pt, which the step_* rotation never deletes."""
        acc = self.accelerator
        acc.wait_for_everyone()
        states = [self.process_state()]
        if acc.num_processes > 1:
            states = gather_object(states)
        path = None
        if acc.is_main_process:
            assert_finite_parameters({k: acc.unwrap_model(v) for k, v in self.nets.present().items()},
                                     self.step)
            state = self.state_dict(states)
            path = (ckpt.save_best_checkpoint(state, self.output_dir, self.step) if best else
                    ckpt.save_checkpoint(state, self.output_dir, self.step,
                                         keep=self.config.train.keep_checkpoints))
        acc.wait_for_everyone()
        return path

    def _checkpoint_unless_bad_streak(self) -> Path | None:
        # During a run of non-finite steps nothing is saved: the newest checkpoint is always one
        # written after a good update, which is where a retry with other settings should start.
        if self.guard.consecutive == 0:
            return self.save_checkpoint()
        log.warning("step %d: no checkpoint while steps are non-finite (%d in a row)",
                    self.step, self.guard.consecutive)
        return None

    # --- one step ----------------------------------------------------------------------------

    def _to_device(self, batch: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        fmt = torch.channels_last if self.channels_last else torch.contiguous_format
        dev = self.accelerator.device
        return (batch["a"].to(dev, non_blocking=True, memory_format=fmt),
                batch["b"].to(dev, non_blocking=True, memory_format=fmt))

    def generator_losses(self, real_a: torch.Tensor, real_b: torch.Tensor) -> tuple[
            torch.Tensor, dict[str, torch.Tensor], torch.Tensor | None, torch.Tensor]:
        """The generators' objective; returns (total, parts, fake_a, fake_b). fake_a is None
        under cut/fastcut, which translate A -> B only."""
        n, objective = self.nets, self.config.model.objective
        augment = self._augment if self.config.train.diff_augment else None
        if self.config.model.one_way:
            total, parts, fake_b = contrastive_generator_losses(
                n.g_ab, self._plain(n.g_ab).encode, self.d_b_plain, n.nce_heads, real_a, real_b,
                self.config.loss, objective, self.gan_loss, augment, self.perceptual)
            return total, parts, None, fake_b
        return generator_losses(n.g_ab, n.g_ba, self.d_a_plain, self.d_b_plain, real_a, real_b,
                                self.config.loss, self.gan_loss, self.perceptual, augment)

    def discriminator_loss(self, d: nn.Module, real: torch.Tensor, fake: torch.Tensor,
                           parts: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        lc = self.config.loss
        # Lazy R1 (StyleGAN2): every r1_every-th D step, weighted r1_every times as much.
        lazy = lc.r1_gamma > 0 and self.step % lc.r1_every == 0
        r1_weight = lc.r1_gamma / 2 * lc.r1_every if lazy else 0.0
        augment = self._augment if self.config.train.diff_augment else None
        if real.shape != fake.shape:  # whole-image modes: an older fake of another size
            real, fake = crop_to_common_size([real, fake], *torch.rand(2).tolist())
        return discriminator_loss(d, real, fake, self.gan_loss, augment, r1_weight, parts)

    def train_step(self, micro_batches: list[dict[str, Any]]) -> tuple[dict[str, torch.Tensor], bool]:
        """One optimizer step of G, then of D, over `grad_accum_steps` micro-batches.

        Returns the losses and whether every update was applied. A non-finite G loss skips the
        whole step (its fakes never enter the history pools); a non-finite D loss skips D's."""
        acc, n, k = self.accelerator, self.nets, len(micro_batches)
        reals = [self._to_device(b) for b in micro_batches]
        logs: dict[str, torch.Tensor] = {}
        generators = [net for net in (n.g_ab, n.g_ba, n.nce_heads) if net is not None]
        # G step: D frozen (no grads for its weights; it only passes gradients to the fakes).
        _set_requires_grad(self._discriminators(), False)
        fakes = []
        for i, (real_a, real_b) in enumerate(reals):
            with self._no_sync(i < k - 1, *generators), acc.autocast():
                loss_g, parts, fake_a, fake_b = self.generator_losses(real_a, real_b)
            acc.backward(loss_g / k)
            parts |= _changes(real_a, real_b, fake_a, fake_b)
            # Reused by the D step, not recomputed.
            fakes.append((None if fake_a is None else fake_a.detach(), fake_b.detach()))
            _accumulate(logs, {"g_total": loss_g.detach(), **{k_: v.detach() for k_, v in parts.items()}}, k)
        ok = self.guard.all_finite(logs, self._checked_params(self.opt_g), "G")
        if ok:
            self.opt_g.step()
            for name, average in self.ema.items():
                average.update(self.accelerator.unwrap_model(getattr(n, name)))
        self.opt_g.zero_grad(set_to_none=True)
        if ok:
            ok = self._discriminator_step(reals, fakes, logs)
        # The schedule follows the step count, skipped or not, so a resumed run matches.
        self.sched_g.step()
        self.sched_d.step()
        return logs, ok

    def _discriminators(self) -> list[nn.Module]:
        return [d for d in (self.nets.d_a, self.nets.d_b) if d is not None]

    def _discriminator_step(self, reals: list, fakes: list, logs: dict[str, torch.Tensor]) -> bool:
        acc, n, k = self.accelerator, self.nets, len(reals)
        d_logs: dict[str, torch.Tensor] = {}
        # D step on real images and fakes drawn from the history pools.
        _set_requires_grad(self._discriminators(), True)
        for i, ((real_a, real_b), (fake_a, fake_b)) in enumerate(zip(reals, fakes)):
            sides = [("d_a", n.d_a, real_a, fake_a, self.pool_a), ("d_b", n.d_b, real_b, fake_b, self.pool_b)]
            losses, step_logs = [], {}
            with self._no_sync(i < k - 1, *self._discriminators()), acc.autocast():
                for name, d, real, fake, pool in sides:
                    if d is None:
                        continue
                    parts: dict[str, torch.Tensor] = {}
                    losses.append(self.discriminator_loss(d, real, pool.query(fake), parts))
                    step_logs[name] = losses[-1].detach()
                    step_logs |= {f"{name}_{key}": value for key, value in parts.items()}
            acc.backward(sum(losses) / k)
            r1 = [step_logs.pop(key) for key in ("d_a_r1", "d_b_r1") if key in step_logs]
            if r1:
                step_logs["r1"] = sum(r1)
            _accumulate(d_logs, step_logs, k)
        logs |= d_logs
        ok = self.guard.all_finite(d_logs, self._checked_params(self.opt_d), "D")
        if ok:
            self.opt_d.step()
        self.opt_d.zero_grad(set_to_none=True)
        return ok

    def _checked_params(self, opt: torch.optim.Optimizer) -> list[torch.Tensor]:
        # Under fp16 the gradients are loss-scaled and inf on purpose now and then: the grad
        # scaler skips those steps and lowers the scale itself.
        if self.accelerator.scaler is not None:
            return []
        return [p for group in opt.param_groups for p in group["params"]]

    def _no_sync(self, skip_sync: bool, *models: nn.Module) -> contextlib.AbstractContextManager:
        if not skip_sync:
            return contextlib.nullcontext()
        stack = contextlib.ExitStack()
        for model in models:
            stack.enter_context(self.accelerator.no_sync(model))
        return stack

    # --- the loop ----------------------------------------------------------------------------

    def fit(self) -> Path | None:
        """Train to `train.max_steps` (or a SIGTERM/SIGINT: see `stopped_by`); returns the last
        checkpoint's path. The output_dir lock is released on the way out."""
        try:
            if self.accelerator.is_main_process:
                self.lock.acquire()  # again, for a second fit() of this Trainer
            return self._fit()
        finally:
            self.lock.release()

    def _fit(self) -> Path | None:
        acc, tc = self.accelerator, self.config.train
        self.stopped_by = None
        self._write_run_files()
        if self.step >= tc.max_steps:
            log.info("already at step %d >= train.max_steps=%d: nothing to do", self.step, tc.max_steps)
            return ckpt.latest_checkpoint(self.output_dir)
        loader = build_dataloader(
            self.dataset, tc.batch_size, start_step=self.step * tc.grad_accum_steps,
            num_workers=self.config.data.num_workers, rank=acc.process_index,
            world_size=acc.num_processes, seed=tc.seed, pin_memory=acc.device.type == "cuda")
        batches = iter(loader)
        self.progress.start(tc.max_steps, self.step,
                            tc.batch_size * acc.num_processes * tc.grad_accum_steps)
        logs: dict[str, torch.Tensor] = {}
        last_path, t_log, steps_since_log, good_steps = None, time.perf_counter(), 0, 0
        first_step = self.step
        with StopRequested() as stop:
            while self.step < tc.max_steps:
                micro = [next(batches) for _ in range(tc.grad_accum_steps)]
                self.skipped_images += sum(int(b["skipped"].sum()) for b in micro)
                with self.progress.status("compiling (torch.compile) in the first step",
                                          when=tc.compile and self.step == first_step):
                    step_logs, ok = self.train_step(micro)
                self.step += 1
                self.guard.record(self.step, None if ok else step_logs, _batch_files(micro))
                if ok:  # a skipped step's NaNs would poison the logged means
                    good_steps += 1
                    for key, value in step_logs.items():
                        logs[key] = logs.get(key, 0) + value
                steps_since_log += 1
                self.progress.step()
                if self.step % tc.log_every == 0 or self.step == tc.max_steps:
                    rate = steps_since_log / (time.perf_counter() - t_log)
                    self._log_metrics({k: v / good_steps for k, v in logs.items()}, rate)
                    logs, t_log, steps_since_log, good_steps = {}, time.perf_counter(), 0, 0
                if self.step % tc.sample_every == 0 or self.step == tc.max_steps:
                    with self.progress.status("sample grids"):
                        self.save_samples()
                if self.config.eval.every and self.step % self.config.eval.every == 0:
                    with self.progress.status("held-out FID/KID"):
                        self.evaluate()
                done = self.step == tc.max_steps
                stopping = _any_process(acc, stop.signal)
                if self.step % tc.checkpoint_every == 0 or done or stopping:
                    with self.progress.status("writing a checkpoint"):
                        last_path = self._checkpoint_unless_bad_streak() or last_path
                if stopping and not done:
                    self.progress.close()
                    self.stopped_by = stop.signal or "another process"
                    if acc.is_main_process:
                        log.warning("stopped by %s at step %d; checkpoint %s. Continue with --resume.",
                                    stop.signal or "another process", self.step, last_path)
                    break
        self.progress.close()
        acc.end_training()
        if acc.is_main_process:
            try:
                with self.progress.status("writing the run page"):
                    write_report(self.output_dir)  # index.html: curves, samples, config
            except (OSError, ValueError) as err:  # a page is not worth failing a run for
                log.warning("could not write %s/index.html: %s", self.output_dir, err)
        return last_path

    def _write_run_files(self) -> None:
        if not self.accelerator.is_main_process:
            return
        self.output_dir.mkdir(parents=True, exist_ok=True)
        chosen = describe_precision(self.precision, self.precision_reason)
        write_text_atomic(self.output_dir / "config.yaml",
                          f"# precision: {chosen}\n" + self.config.to_yaml())
        init_tracker(self.accelerator, self.config)

    def evaluate(self) -> dict[str, float]:
        """Held-out FID/KID of both directions (main process); a new best of the FID chosen by
        eval.best is saved as checkpoints/best.pt."""
        acc, scores, best_by = self.accelerator, {}, self.config.eval.best
        if self.training_fid is not None:
            scores = self.training_fid(*self.generators_for_inference(), self.step)
            self._append_metrics({"eval_" + k: v for k, v in scores.items()})
            acc.log({"eval_" + k: v for k, v in scores.items()}, step=self.step)
        if _any_process(acc, True if scores.get("is_best") else None):
            path = self.save_checkpoint(best=True)
            if path:
                log.info("step %d: best held-out FID (%s) so far (%.3f): %s", self.step, best_by,
                         scores[f"fid_{best_by}"], path)
        return scores

    def _append_metrics(self, values: dict[str, Any]) -> None:
        with (self.output_dir / "metrics.jsonl").open("a") as f:
            f.write(json.dumps({"step": self.step, **values}) + "\n")

    def _log_metrics(self, logs: dict[str, torch.Tensor], rate: float) -> None:
        # The only host-device sync of the loop: losses are read back when logged, not per step.
        acc = self.accelerator
        values = {k: acc.reduce(v.detach().float(), reduction="mean").item() for k, v in logs.items()}
        values |= {"lr": self.sched_g.get_last_lr()[0], "steps_per_s": rate,
                   "world_size": acc.num_processes,
                   "images_per_s": rate * self.config.train.batch_size * acc.num_processes
                   * self.config.train.grad_accum_steps, "skipped_images": self.skipped_images,
                   "unreadable_folders": self.unreadable_folders, "bad_steps": self.guard.total,
                   "precision": self.precision}
        if acc.is_main_process:
            self.progress.losses(values)
            self._append_metrics(values)
            self.diagnostics.check(self.step, values, self.config.train.max_steps)
        acc.log(values, step=self.step)

    @torch.no_grad()
    def save_samples(self) -> None:
        """Sample grids (training stream, held-out) to samples/ and to the trackers."""
        if not self.accelerator.is_main_process:
            return
        grids = self.samples.write(*self.generators_for_inference(), self.step,
                                   self.accelerator.autocast)
        log_images(self.accelerator, grids, self.step)


def _changes(real_a: torch.Tensor, real_b: torch.Tensor, fake_a: torch.Tensor | None,
             fake_b: torch.Tensor) -> dict[str, torch.Tensor]:
    """mean |G_AB(A) - A| and |G_BA(B) - B|: near zero, a generator copies its input."""
    with torch.no_grad():
        changes = {"change_ab": (fake_b.float() - real_a.float()).abs().mean()}
        if fake_a is not None:
            changes["change_ba"] = (fake_a.float() - real_b.float()).abs().mean()
        return changes


def _set_requires_grad(models: list[nn.Module], flag: bool) -> None:
    for model in models:
        for p in model.parameters():
            p.requires_grad_(flag)


def _batch_files(micro_batches: list[dict[str, Any]]) -> list[str]:
    return [path for b in micro_batches for key in ("path_a", "path_b") for path in b[key]]


def _accumulate(logs: dict[str, torch.Tensor], new: dict[str, torch.Tensor], k: int) -> None:
    for key, value in new.items():
        logs[key] = logs.get(key, 0) + value / k


def _any_process(acc: Accelerator, flag: Any) -> bool:
    if acc.num_processes == 1:
        return flag is not None
    t = torch.tensor([1.0 if flag is not None else 0.0], device=acc.device)
    return bool(acc.reduce(t, reduction="sum").item() > 0)


def _device(force_cpu: bool) -> str:
    return "cuda" if torch.cuda.is_available() and not force_cpu else "cpu"


def train(config: ExperimentConfig, resume: str | Path | bool | None = None) -> Path | None:
    return Trainer(config, resume=resume).fit()
