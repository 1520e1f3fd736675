"""The CycleGAN trainer: G step with the discriminators frozen, then D step with a history pool.

Runs through `accelerate`, so the same loop serves one CPU, one GPU, or many processes
(`accelerate launch`). Every random choice is a function of the seed and the step, and every
piece of state lives in the checkpoint, so `--resume` continues the interrupted run exactly.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState
from accelerate.utils import gather_object, set_seed
from torch import nn
from tqdm.auto import tqdm

from cyclestyle import checkpoint as ckpt
from cyclestyle.config import ConfigError, ExperimentConfig, from_dict
from cyclestyle.data import UnpairedDataset, build_dataloader, find_images, resolve_domain_dirs
from cyclestyle.interrupt import StopRequested
from cyclestyle.losses import GANLoss, PerceptualLoss, cycle_loss, identity_loss
from cyclestyle.models import create_discriminator
from cyclestyle.models.layers import channels_last_is_safe
from cyclestyle.pool import ImagePool
from cyclestyle.samples import save_sample_grid

log = logging.getLogger(__name__)


@dataclass
class Networks:
    g_ab: nn.Module  # G_AB: A -> B
    g_ba: nn.Module  # G_BA: B -> A
    d_a: nn.Module  # D_A: real A vs G_BA(B)
    d_b: nn.Module  # D_B: real B vs G_AB(A)


def build_networks(config: ExperimentConfig) -> Networks:
    g_ab, g_ba = ckpt.build_generators(config)
    kw = config.model.discriminator_args
    return Networks(g_ab, g_ba, create_discriminator(config.model.discriminator, **kw),
                    create_discriminator(config.model.discriminator, **kw))


def lr_factor(step: int, config: ExperimentConfig) -> float:
    """Constant, then linear decay to zero at max_steps (CycleGAN's 100 + 100 epochs)."""
    start, end = config.train.decay_start_step, config.train.max_steps
    if step < start or end <= start:
        return 1.0
    return max(0.0, (end - step) / (end - start))


class Trainer:
    def __init__(self, config: ExperimentConfig, resume: str | Path | bool | None = None):
        self.config = config
        self.output_dir = Path(config.output_dir)
        tc = config.train
        # accelerate keeps its settings (mixed precision, CPU) in a process-wide singleton that
        # refuses changes; clear them so several trainers can run in one process (tests,
        # notebooks). The distributed state (PartialState) is kept.
        AcceleratorState._reset_state(reset_partial_state=False)
        self.accelerator = Accelerator(
            mixed_precision=tc.mixed_precision, cpu=tc.cpu,
            log_with=None if tc.tracker == "none" else tc.tracker,
            project_dir=str(self.output_dir))
        acc = self.accelerator
        resume_state = self._find_resume_state(resume)
        set_seed(tc.seed)  # same initial weights in every process
        self.nets = build_networks(config)
        self.channels_last = self._use_channels_last()
        self.gan_loss = GANLoss(config.loss.gan_mode)
        self.perceptual = self._build_perceptual().to(acc.device)
        params_g = [*self.nets.g_ab.parameters(), *self.nets.g_ba.parameters()]
        params_d = [*self.nets.d_a.parameters(), *self.nets.d_b.parameters()]
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
        if resume_state is not None:
            self._load_state(resume_state)
        g_ab, g_ba, d_a, d_b, self.opt_g, self.opt_d = acc.prepare(
            self.nets.g_ab, self.nets.g_ba, self.nets.d_a, self.nets.d_b, self.opt_g, self.opt_d)
        self.nets = Networks(g_ab, g_ba, d_a, d_b)
        # In the G step the discriminators are frozen and only pass gradients to the fakes, so
        # they are called without their DDP wrapper: no gradient sync is due for them there.
        self.d_a_plain, self.d_b_plain = acc.unwrap_model(d_a), acc.unwrap_model(d_b)
        if tc.compile:
            self._compile()
        self.dataset = self._build_dataset()

    # --- set-up ------------------------------------------------------------------------------

    def _lr_lambda(self, step: int) -> float:
        return lr_factor(step, self.config)

    def _find_resume_state(self, resume: str | Path | bool | None) -> dict | None:
        if not resume:
            return None
        # Load once: the newest readable checkpoint is found by loading it.
        state = ckpt.load_latest(self.output_dir) if resume is True else ckpt.load_checkpoint(resume)
        if state is None:
            log.warning("--resume: no checkpoint in %s yet; starting from step 0",
                        ckpt.checkpoint_dir(self.output_dir))
            return None
        saved = from_dict(state["config"])
        if saved.model != self.config.model:
            raise ConfigError(f"cannot resume from {state['path']}: its model section "
                              f"{saved.model} differs from the config's {self.config.model}")
        log.info("resuming from %s (step %d)", state["path"], state["step"])
        return state

    def _use_channels_last(self) -> bool:
        if not self.config.train.channels_last:
            return False
        device, batch = self.accelerator.device, self.config.train.batch_size
        if all(channels_last_is_safe(net, device, batch) for net in vars(self.nets).values()):
            for net in vars(self.nets).values():
                net.to(memory_format=torch.channels_last)
            return True
        log.warning("train.channels_last ignored: InstanceNorm at batch size 1 on CPU gives wrong "
                    "gradients with channels_last in this torch version")
        return False

    def _build_perceptual(self) -> nn.Module:
        lc = self.config.loss
        if lc.lambda_perceptual == 0 and lc.lambda_content == 0:
            return nn.Identity()  # no VGG needed: don't ask for weights
        from cyclestyle.vgg import VGGFeatures

        return PerceptualLoss(VGGFeatures(lc.perceptual_layers, weights=lc.vgg_weights))

    def _compile(self) -> None:
        for name in ("g_ab", "g_ba", "d_a", "d_b"):
            setattr(self.nets, name, torch.compile(getattr(self.nets, name)))
        self.d_a_plain, self.d_b_plain = torch.compile(self.d_a_plain), torch.compile(self.d_b_plain)

    def _build_dataset(self) -> UnpairedDataset:
        dc = self.config.data
        dir_a, dir_b = resolve_domain_dirs(dc.domain_a, dc.domain_b, dc.root, dc.split)
        return UnpairedDataset(find_images(dir_a), find_images(dir_b), dc.image_size,
                               load_size=dc.resolved_load_size, flip=dc.flip,
                               seed=self.config.train.seed, skip_bad_images=dc.skip_bad_images)

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
            "models": {name: _plain_state(unwrap(net)) for name, net in vars(self.nets).items()},
            "optimizers": {"g": self.opt_g.state_dict(), "d": self.opt_d.state_dict()},
            "schedulers": {"g": self.sched_g.state_dict(), "d": self.sched_d.state_dict()},
            "processes": process_states or [self.process_state()],  # in rank order
            "world_size": self.accelerator.num_processes,
        }

    def _load_state(self, state: dict[str, Any]) -> None:
        for name, net in vars(self.nets).items():
            net.load_state_dict(state["models"][name])
        self.opt_g.load_state_dict(state["optimizers"]["g"])
        self.opt_d.load_state_dict(state["optimizers"]["d"])
        self.sched_g.load_state_dict(state["schedulers"]["g"])
        self.sched_d.load_state_dict(state["schedulers"]["d"])
        self.step = state["step"]
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

    def save_checkpoint(self) -> Path | None:
        """Every process takes part (its pools and RNG go in); the main one writes the file."""
        acc = self.accelerator
        acc.wait_for_everyone()
        states = [self.process_state()]
        if acc.num_processes > 1:
            states = gather_object(states)
        path = None
        if acc.is_main_process:
            path = ckpt.save_checkpoint(self.state_dict(states), self.output_dir, self.step,
                                        keep=self.config.train.keep_checkpoints)
        acc.wait_for_everyone()
        return path

    # --- one step ----------------------------------------------------------------------------

    def _to_device(self, batch: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        fmt = torch.channels_last if self.channels_last else torch.contiguous_format
        dev = self.accelerator.device
        return (batch["a"].to(dev, non_blocking=True, memory_format=fmt),
                batch["b"].to(dev, non_blocking=True, memory_format=fmt))

    def generator_losses(self, real_a: torch.Tensor, real_b: torch.Tensor) -> tuple[
            torch.Tensor, dict[str, torch.Tensor], torch.Tensor, torch.Tensor]:
        """CycleGAN's generator objective; returns (total, parts, fake_a, fake_b)."""
        n, lc = self.nets, self.config.loss
        fake_b = n.g_ab(real_a)  # G_AB(A)
        fake_a = n.g_ba(real_b)  # G_BA(B)
        # Second passes batched: InstanceNorm/GroupNorm are per sample, so this equals separate
        # calls, with half the kernel launches. Identity terms ride along when enabled.
        use_idt = lc.lambda_identity > 0
        out_b = n.g_ab(torch.cat([fake_a, real_b]) if use_idt else fake_a)
        out_a = n.g_ba(torch.cat([fake_b, real_a]) if use_idt else fake_b)
        rec_b, idt_b = out_b.split(len(real_b)) if use_idt else (out_b, None)  # G_AB(G_BA(B)), G_AB(B)
        rec_a, idt_a = out_a.split(len(real_a)) if use_idt else (out_a, None)  # G_BA(G_AB(A)), G_BA(A)
        parts = {
            "g_adv": self.gan_loss(self.d_b_plain(fake_b), True, for_discriminator=False)
            + self.gan_loss(self.d_a_plain(fake_a), True, for_discriminator=False),
            "cycle": lc.lambda_cycle * (cycle_loss(rec_a, real_a) + cycle_loss(rec_b, real_b)),
        }
        if use_idt:
            parts["identity"] = lc.lambda_identity * lc.lambda_cycle * (
                identity_loss(idt_a, real_a) + identity_loss(idt_b, real_b))
        vgg_terms = {"perceptual": (lc.lambda_perceptual, torch.cat([rec_a, rec_b])),  # cycle
                     "content": (lc.lambda_content, torch.cat([fake_b, fake_a]))}  # translation
        vgg_terms = {k: v for k, v in vgg_terms.items() if v[0] > 0}
        if vgg_terms:  # one VGG pass for both terms: they share the target
            distances = self.perceptual.many([x.float() for _, x in vgg_terms.values()],
                                             torch.cat([real_a, real_b]).float())
            for (key, (weight, _)), distance in zip(vgg_terms.items(), distances):
                parts[key] = weight * distance
        return sum(parts.values()), parts, fake_a, fake_b

    def discriminator_loss(self, d: nn.Module, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
        # One call on real and fake together: a DDP module must run once per backward.
        pred = d(torch.cat([real, fake]))
        preds = pred if isinstance(pred, (list, tuple)) else [pred]
        pred_real = [p[: len(real)] for p in preds]
        pred_fake = [p[len(real):] for p in preds]
        return 0.5 * (self.gan_loss(pred_real, True) + self.gan_loss(pred_fake, False))

    def train_step(self, micro_batches: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        """One optimizer step of G, then of D, over `grad_accum_steps` micro-batches."""
        acc, n, k = self.accelerator, self.nets, len(micro_batches)
        reals = [self._to_device(b) for b in micro_batches]
        logs: dict[str, torch.Tensor] = {}
        # G step: D frozen (no grads for its weights; it only passes gradients to the fakes).
        _set_requires_grad([n.d_a, n.d_b], False)
        fakes = []
        for i, (real_a, real_b) in enumerate(reals):
            with self._no_sync(i < k - 1, n.g_ab, n.g_ba), acc.autocast():
                loss_g, parts, fake_a, fake_b = self.generator_losses(real_a, real_b)
            acc.backward(loss_g / k)
            fakes.append((fake_a.detach(), fake_b.detach()))  # reused by the D step, not recomputed
            _accumulate(logs, {"g_total": loss_g.detach(), **{k_: v.detach() for k_, v in parts.items()}}, k)
        self.opt_g.step()
        self.opt_g.zero_grad(set_to_none=True)
        # D step on real images and fakes drawn from the history pools.
        _set_requires_grad([n.d_a, n.d_b], True)
        for i, ((real_a, real_b), (fake_a, fake_b)) in enumerate(zip(reals, fakes)):
            with self._no_sync(i < k - 1, n.d_a, n.d_b), acc.autocast():
                loss_d_a = self.discriminator_loss(n.d_a, real_a, self.pool_a.query(fake_a))
                loss_d_b = self.discriminator_loss(n.d_b, real_b, self.pool_b.query(fake_b))
            acc.backward((loss_d_a + loss_d_b) / k)
            _accumulate(logs, {"d_a": loss_d_a.detach(), "d_b": loss_d_b.detach()}, k)
        self.opt_d.step()
        self.opt_d.zero_grad(set_to_none=True)
        self.sched_g.step()
        self.sched_d.step()
        return logs

    def _no_sync(self, skip_sync: bool, *models: nn.Module) -> contextlib.AbstractContextManager:
        if not skip_sync:
            return contextlib.nullcontext()
        stack = contextlib.ExitStack()
        for model in models:
            stack.enter_context(self.accelerator.no_sync(model))
        return stack

    # --- the loop ----------------------------------------------------------------------------

    def fit(self) -> Path | None:
        """Train to `train.max_steps`; returns the last checkpoint's path."""
        acc, tc = self.accelerator, self.config.train
        self._write_run_files()
        if self.step >= tc.max_steps:
            log.info("already at step %d >= train.max_steps=%d: nothing to do", self.step, tc.max_steps)
            return ckpt.latest_checkpoint(self.output_dir)
        loader = build_dataloader(
            self.dataset, tc.batch_size, start_step=self.step * tc.grad_accum_steps,
            num_workers=self.config.data.num_workers, rank=acc.process_index,
            world_size=acc.num_processes, seed=tc.seed, pin_memory=acc.device.type == "cuda")
        batches = iter(loader)
        bar = tqdm(total=tc.max_steps, initial=self.step, disable=not (tc.progress and acc.is_local_main_process),
                   desc="train", unit="step", dynamic_ncols=True)
        logs: dict[str, torch.Tensor] = {}
        last_path, t_log, steps_since_log = None, time.perf_counter(), 0
        with StopRequested() as stop:
            while self.step < tc.max_steps:
                micro = [next(batches) for _ in range(tc.grad_accum_steps)]
                self.skipped_images += sum(int(b["skipped"].sum()) for b in micro)
                for key, value in self.train_step(micro).items():
                    logs[key] = logs.get(key, 0) + value
                self.step += 1
                steps_since_log += 1
                bar.update(1)
                if self.step % tc.log_every == 0 or self.step == tc.max_steps:
                    rate = steps_since_log / (time.perf_counter() - t_log)
                    self._log_metrics({k: v / steps_since_log for k, v in logs.items()}, rate, bar)
                    logs, t_log, steps_since_log = {}, time.perf_counter(), 0
                if self.step % tc.sample_every == 0 or self.step == tc.max_steps:
                    self.save_samples()
                done = self.step == tc.max_steps
                stopping = _any_process(acc, stop.signal)
                if self.step % tc.checkpoint_every == 0 or done or stopping:
                    last_path = self.save_checkpoint() or last_path
                if stopping and not done:
                    bar.close()
                    if acc.is_main_process:
                        log.warning("stopped by %s at step %d; checkpoint %s. Continue with --resume.",
                                    stop.signal or "another process", self.step, last_path)
                    break
        bar.close()
        acc.end_training()
        return last_path

    def _write_run_files(self) -> None:
        if not self.accelerator.is_main_process:
            return
        self.output_dir.mkdir(parents=True, exist_ok=True)
        (self.output_dir / "config.yaml").write_text(self.config.to_yaml())
        if self.config.train.tracker != "none":
            if self.config.train.tracker == "wandb" and not os.environ.get("WANDB_API_KEY") \
                    and not os.environ.get("WANDB_MODE"):
                os.environ["WANDB_MODE"] = "offline"  # no key: log locally, sync later
                log.warning("wandb: no WANDB_API_KEY; logging offline under %s", self.output_dir)
            kwargs = {"wandb": {"dir": str(self.output_dir)}}
            self.accelerator.init_trackers(self.config.train.project, config=_flatten(self.config.to_dict()),
                                           init_kwargs=kwargs)

    def _log_metrics(self, logs: dict[str, torch.Tensor], rate: float, bar: tqdm) -> None:
        # The only host-device sync of the loop: losses are read back when logged, not per step.
        acc = self.accelerator
        values = {k: acc.reduce(v.detach().float(), reduction="mean").item() for k, v in logs.items()}
        values |= {"lr": self.sched_g.get_last_lr()[0], "steps_per_s": rate,
                   "world_size": acc.num_processes,
                   "images_per_s": rate * self.config.train.batch_size * acc.num_processes
                   * self.config.train.grad_accum_steps, "skipped_images": self.skipped_images}
        if not all(math.isfinite(v) for v in values.values()):
            log.warning("non-finite loss at step %d: %s", self.step, values)
        if acc.is_main_process:
            bar.set_postfix({k: f"{values[k]:.3f}" for k in ("g_total", "d_a", "d_b") if k in values})
            with (self.output_dir / "metrics.jsonl").open("a") as f:
                f.write(json.dumps({"step": self.step, **values}) + "\n")
        acc.log(values, step=self.step)

    @torch.no_grad()
    def save_samples(self, count: int = 4) -> None:
        if not self.accelerator.is_main_process:
            return
        items = [self.dataset[i] for i in range(count)]  # fixed stream indices: comparable across steps
        real_a = torch.stack([it["a"] for it in items]).to(self.accelerator.device)
        real_b = torch.stack([it["b"] for it in items]).to(self.accelerator.device)
        g_ab, g_ba = (self.accelerator.unwrap_model(g) for g in (self.nets.g_ab, self.nets.g_ba))
        was_training = g_ab.training
        g_ab.eval(), g_ba.eval()
        with self.accelerator.autocast():
            fake_b, fake_a = g_ab(real_a), g_ba(real_b)
            rows = [real_a, fake_b, g_ba(fake_b), real_b, fake_a, g_ab(fake_a)]
        g_ab.train(was_training), g_ba.train(was_training)
        save_sample_grid([r.float().cpu() for r in rows], self.output_dir / "samples" / f"step_{self.step:08d}.png",
                         labels=["A", "G_AB(A)", "G_BA(G_AB(A))", "B", "G_BA(B)", "G_AB(G_BA(B))"])


def _plain_state(module: nn.Module) -> dict[str, torch.Tensor]:
    # torch.compile wraps modules as `_orig_mod`; store the plain names so checkpoints are portable.
    module = getattr(module, "_orig_mod", module)
    return {k: v.detach().cpu().clone() for k, v in module.state_dict().items()}


def _set_requires_grad(models: list[nn.Module], flag: bool) -> None:
    for model in models:
        for p in model.parameters():
            p.requires_grad_(flag)


def _accumulate(logs: dict[str, torch.Tensor], new: dict[str, torch.Tensor], k: int) -> None:
    for key, value in new.items():
        logs[key] = logs.get(key, 0) + value / k


def _any_process(acc: Accelerator, flag: Any) -> bool:
    if acc.num_processes == 1:
        return flag is not None
    t = torch.tensor([1.0 if flag is not None else 0.0], device=acc.device)
    return bool(acc.reduce(t, reduction="sum").item() > 0)


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in d.items():
        if isinstance(value, dict) and value:
            out |= _flatten(value, f"{prefix}{key}.")
        else:
            out[prefix + key] = value if isinstance(value, (int, float, str, bool)) else str(value)
    return out


def train(config: ExperimentConfig, resume: str | Path | bool | None = None) -> Path | None:
    return Trainer(config, resume=resume).fit()
