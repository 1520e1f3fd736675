"""What the trainer watches: non-finite losses (skip, count, stop) and held-out FID (best.pt)."""

from __future__ import annotations

import json
import logging

import pytest
import torch
from PIL import Image
from torch import nn

from cyclestyle import checkpoint as ckpt
from cyclestyle import models
from cyclestyle.cli import main
from cyclestyle.train.config import ConfigError, load_config
from cyclestyle.train.monitor import NonFiniteLossError
from cyclestyle.train.trainer import Trainer
from tests.helpers import TINY, tiny_config, write_images


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


# --- NaN gradients from finite losses -----------------------------------------------------------

def tiny_generators() -> list[tuple[str, dict]]:
    args = load_config(TINY, ["data.domain_a=a", "data.domain_b=b"]).model.generator_args
    return [("unet_attn", {**args, "norm": "instance"}), ("unet_attn", {**args, "norm": "group"}),
            ("resnet", {"base_channels": 8, "n_blocks": 2, "affine_norm": True})]


@pytest.mark.parametrize(("name", "args"), tiny_generators(),
                         ids=["unet_attn-instance", "unet_attn-group", "resnet-affine"])
@pytest.mark.parametrize("side", [32, 1])
def test_a_solid_colour_image_has_finite_gradients(name, args, side):
    """The root cause of the NaN: every feature map of a solid-colour image is constant, and each
    norm multiplied its gradient by 1/sqrt(eps) = 316; 16 of them in a row overflow float32.
    Now a flat map passes no gradient back through its norm (layers.stop_flat_gradient)."""
    torch.manual_seed(0)
    g_ab, g_ba = models.create_generator(name, **args), models.create_generator(name, **args)
    solid = torch.tensor([0.4, -0.2, 0.9]).view(1, 3, 1, 1).expand(2, 3, side, side)
    fake = g_ab(solid)
    loss = (g_ba(fake) - solid).abs().mean() + (fake - solid).abs().mean()  # cycle + identity
    assert torch.isfinite(loss)
    loss.backward()
    for net in (g_ab, g_ba):
        for pname, param in net.named_parameters():
            assert param.grad is None or torch.isfinite(param.grad).all(), pname


def test_norms_forward_is_unchanged_by_the_flat_map_guard():
    """The guard only touches the backward pass: outputs equal torch's own norms bit for bit."""
    from cyclestyle.models.layers import make_norm

    x = torch.randn(2, 8, 5, 5).requires_grad_()
    x_flat = torch.cat([x[:, :4], torch.full((2, 4, 5, 5), 0.3)], 1)
    for norm, plain in (("instance", nn.InstanceNorm2d(8, affine=True)),
                        ("group", nn.GroupNorm(4, 8))):
        ours = make_norm(norm, 8)
        assert torch.equal(ours(x_flat), plain(x_flat))
        ours(x_flat).square().sum().backward()
        assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0  # non-flat maps learn
        x.grad = None


def test_solid_colour_and_one_pixel_images_train_normally(tmp_path):
    dirs = write_images(tmp_path / "A", 3, seed=1), write_images(tmp_path / "B", 3, seed=2)
    Image.new("RGB", (40, 40), (120, 60, 200)).save(dirs[0] / "solid.png")
    Image.new("RGB", (1, 1), (10, 200, 30)).save(dirs[0] / "pixel.png")
    out = tmp_path / "run"
    trainer = Trainer(tiny_config(dirs, out, "train.max_steps=8", "train.log_every=1",
                                  "train.checkpoint_every=8", "train.max_bad_steps=1"))
    seen = {trainer.dataset[k]["path_a"] for k in range(8)}
    assert {str(dirs[0] / "solid.png"), str(dirs[0] / "pixel.png")} <= seen
    assert trainer.fit() == out / "checkpoints" / "step_00000008.pt"
    assert trainer.guard.total == 0
    for name, net in ckpt.load_checkpoint(out)["models"].items():
        assert all(torch.isfinite(v).all() for v in net.values()), name


class NanGradient(torch.autograd.Function):
    """Identity forward (the loss stays finite); NaN gradient backward."""

    @staticmethod
    def forward(ctx, x):
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        return grad * float("nan")


def poison_gradients(trainer: Trainer, bad_steps: set[int], owner: str) -> None:
    """NaN gradients from finite losses of G ("G") or of D ("D") in the listed steps."""
    if owner == "G":
        original = trainer.generator_losses

        def poisoned(real_a, real_b):
            total, parts, fake_a, fake_b = original(real_a, real_b)
            if trainer.step + 1 in bad_steps:
                parts["cycle"] = NanGradient.apply(parts["cycle"])
                total = sum(parts.values())
            return total, parts, fake_a, fake_b

        trainer.generator_losses = poisoned
    else:
        original_d = trainer.discriminator_loss

        def poisoned_d(d, real, fake, parts=None):
            loss = original_d(d, real, fake, parts)
            return NanGradient.apply(loss) if trainer.step + 1 in bad_steps else loss

        trainer.discriminator_loss = poisoned_d


@pytest.mark.parametrize("owner", ["G", "D"])
def test_nonfinite_gradients_skip_the_update_and_name_the_batch(image_dirs, tmp_path, caplog,
                                                                owner):
    out = tmp_path / "run"
    trainer = Trainer(tiny_config(image_dirs, out, "train.max_steps=3", "train.log_every=1",
                                  "train.checkpoint_every=3"))
    poison_gradients(trainer, {2}, owner)
    snapshots, original_step = [], trainer.train_step

    def recording(micro):
        before = snapshot(trainer)
        logs, ok = original_step(micro)
        snapshots.append((before, snapshot(trainer), ok))
        return logs, ok

    trainer.train_step = recording
    with caplog.at_level(logging.WARNING, logger="cyclestyle"):
        trainer.fit()
    assert [ok for _, _, ok in snapshots] == [True, False, True]
    before, after, _ = snapshots[1]
    assert not changed(before, after, "d_a")  # D's update skipped either way
    assert changed(before, after, "g_ab") == (owner == "D")  # a bad G step skips both updates
    assert all(torch.isfinite(v).all() for v in snapshot(trainer).values())
    assert trainer.guard.total == 1
    assert [r["bad_steps"] for r in metrics_rows(out)] == [0, 1, 1]
    item = trainer.dataset[1]  # step 2's batch (batch size 1)
    warning = next(r.getMessage() for r in caplog.records if "update skipped" in r.getMessage())
    assert warning.startswith(f"step 2: non-finite gradients of {owner} from finite losses")
    assert item["path_a"] in warning and item["path_b"] in warning


def test_a_streak_of_nonfinite_gradients_stops_without_blaming_the_learning_rate(image_dirs,
                                                                                 tmp_path):
    trainer = Trainer(tiny_config(image_dirs, tmp_path / "run", "train.max_steps=5",
                                  "train.max_bad_steps=2"))
    poison_gradients(trainer, {2, 3}, "G")
    with pytest.raises(NonFiniteLossError) as info:
        trainer.fit()
    message = str(info.value)
    assert "stopped at step 3: 2 steps in a row" in message
    assert "non-finite gradients of G from finite losses" in message
    assert trainer.dataset[2]["path_a"] in message  # the last bad batch's files
    assert "lower train.lr" not in message and "check the images" in message


def test_held_out_fid_is_logged_and_the_best_step_kept(image_dirs, tmp_path, tiny_inception,
                                                       monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    out = tmp_path / "run"
    overrides = [f"eval.domain_a={image_dirs[0]}", f"eval.domain_b={image_dirs[1]}",
                 "eval.every=2", f"eval.inception_weights={tiny_inception}",
                 "train.checkpoint_every=1", "train.keep_checkpoints=1"]
    Trainer(tiny_config(image_dirs, out, "train.max_steps=6", *overrides)).fit()
    rows = [r for r in metrics_rows(out) if "eval_fid_mean" in r]
    assert all(r["eval_fid_mean"] == pytest.approx((r["eval_fid_a2b"] + r["eval_fid_b2a"]) / 2)
               for r in rows)  # both directions scored; best.pt by their mean (the default)
    evals = {r["step"]: r["eval_fid_mean"] for r in rows}
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


@pytest.mark.parametrize("splits, used", [(("val", "test"), "val"), (("test",), "test")])
def test_data_root_feeds_held_out_folders_val_before_test(tmp_path, splits, used):
    root = tmp_path / "data"
    for split in ("train", *splits):
        for side, seed in (("A", 1), ("B", 2)):
            write_images(root / f"{split}{side}", 2, seed=seed)
    config = load_config(TINY, [f"data.root={root}", f"output_dir={tmp_path / 'run'}",
                                "eval.every=2"])
    assert config.eval.held_out_dirs(config.data) == (root / f"{used}A", root / f"{used}B")


def test_held_out_translations_are_sampled_without_fid(tmp_path):
    """Held-out folders next to the training ones give held-out sample grids at each sample
    step, even with eval.every=0 (no Inception needed)."""
    root = tmp_path / "data"
    for split, count in (("train", 3), ("val", 2)):
        for side, seed in (("A", 1), ("B", 2)):
            write_images(root / f"{split}{side}", count, seed=seed)
    out = tmp_path / "run"
    Trainer(load_config(TINY, [f"data.root={root}", f"output_dir={out}", "train.max_steps=2",
                               "train.sample_every=1", "train.progress=false"])).fit()
    grids = sorted(p.name for p in (out / "samples").glob("heldout_step_*.png"))
    assert grids == ["heldout_step_00000001.png", "heldout_step_00000002.png"]
    grid = Image.open(out / "samples" / grids[0])
    train_grid = Image.open(out / "samples" / "step_00000001.png")
    # 6 rows (A, G_AB(A), cycle, B, G_BA(B), cycle) of 32-px images; 2 held-out images per
    # domain against the training grid's 4 columns.
    assert grid.height == train_grid.height == 6 * 34 + 2
    assert train_grid.width - grid.width == 2 * 34


def test_eval_without_held_out_folders_fails_before_training(image_dirs, tmp_path):
    with pytest.raises(ConfigError, match=r"eval\.domain_a: required when eval\.every > 0"):
        tiny_config(image_dirs, tmp_path / "run", "eval.every=10")
    with pytest.raises(ConfigError, match=r"eval\.domain_b: .*missing.* is not a folder"):
        tiny_config(image_dirs, tmp_path / "run", "eval.every=10",
                    f"eval.domain_a={image_dirs[0]}", f"eval.domain_b={tmp_path / 'missing'}")
