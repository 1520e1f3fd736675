"""`cyclestyle demo`: the main job on an embedded default, needing nothing but the package.

An unpaired photo -> "cartoon" task built from scikit-image's bundled photographs. Domain B is a
vivid, bright, posterised rendition of *other* crops than domain A's, so no pair exists in
training. Because the true mapping is known, held-out photos can be scored against their true
cartoons: the translated photos must beat the untranslated ones, or the model learned nothing.
"""

from __future__ import annotations

import html
import json
import logging
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from skimage import color, data, filters, metrics

from cyclestyle.atomic import write_text_atomic
from cyclestyle.imageio import from_uint8, save_image_atomic, to_uint8
from cyclestyle.options import read_yaml_mapping
from cyclestyle.train.config import ExperimentConfig, apply_overrides, from_dict

log = logging.getLogger(__name__)

TRAIN_PHOTOS = ("astronaut", "coffee", "rocket", "motorcycle_left", "hubble_deep_field",
                "immunohistochemistry", "camera")
HELD_OUT_PHOTOS = ("chelsea", "motorcycle_right")
CROP = 72  # stored crop size; training crops 64 from it
POSTER_LEVELS = 6
SATURATION = 2.0
BRIGHTEN_GAMMA = 0.5

# The demo's training config is configs/demo.yaml, shipped inside the package (cyclestyle/configs
# links to the top-level configs/ folder), so `cyclestyle demo` and `cyclestyle train
# configs/demo.yaml` train the same model.
DEMO_CONFIG_FILE = "demo.yaml"


def shipped_config_path(name: str) -> Path:
    """A config file shipped with the package (configs/NAME)."""
    from importlib.resources import files

    return Path(str(files("cyclestyle") / "configs" / name))


def photo(name: str) -> np.ndarray:
    """A bundled scikit-image photograph as (H, W, 3) uint8."""
    if name.startswith("motorcycle_"):
        left, right, _ = data.stereo_motorcycle()
        image = left if name.endswith("left") else right
    else:
        image = getattr(data, name)()
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=2)
    return np.ascontiguousarray(image[..., :3])


def cartoonize(rgb: np.ndarray, levels: int = POSTER_LEVELS) -> np.ndarray:
    """The true A -> B mapping: smooth, make colours vivid and bright, posterise into flat bands.

    The shift is strong on purpose (untranslated photos score about 15 dB against it): the
    demo must show learning within minutes of CPU training, and a small CycleGAN learns colour
    and tone long before it learns to place thin ink lines (tried: inked edges cost PSNR).
    """
    x = rgb.astype(np.float32) / 255
    smooth = filters.gaussian(x, sigma=1.0, channel_axis=2)
    hsv = color.rgb2hsv(smooth)
    hsv[..., 1] = np.clip(hsv[..., 1] * SATURATION, 0, 1)
    hsv[..., 2] = hsv[..., 2] ** BRIGHTEN_GAMMA
    poster = np.round(color.hsv2rgb(hsv) * (levels - 1)) / (levels - 1)
    return (poster * 255).round().astype(np.uint8)


def random_crops(image: np.ndarray, count: int, rng: np.random.Generator, size: int = CROP
                 ) -> list[np.ndarray]:
    """Square crops of random position and scale (1/4 to all of the short side), resized."""
    h, w, _ = image.shape
    crops = []
    for _ in range(count):
        side = int(rng.uniform(0.25, 1.0) * min(h, w))
        y, x = rng.integers(0, h - side + 1), rng.integers(0, w - side + 1)
        patch = Image.fromarray(image[y:y + side, x:x + side]).resize((size, size), Image.BICUBIC)
        crops.append(np.asarray(patch))
    return crops


def build_dataset(root: Path, per_photo: int = 40, held_out_per_photo: int = 12,
                  seed: int = 0) -> dict[str, Path]:
    """Write trainA (photos), trainB (cartoons of other crops), testA and its true cartoons."""
    dirs = {k: root / k for k in ("trainA", "trainB", "testA", "testB_true")}
    if all(d.is_dir() and any(d.iterdir()) for d in dirs.values()):
        return dirs  # built before (a resumed demo): same seed, same files
    for d in dirs.values():
        d.mkdir(parents=True, exist_ok=True)
    rng_a, rng_b, rng_test = (np.random.default_rng([seed, i]) for i in range(3))
    for name in TRAIN_PHOTOS:
        image = photo(name)
        for i, crop in enumerate(random_crops(image, per_photo, rng_a)):
            save_image_atomic(Image.fromarray(crop), dirs["trainA"] / f"{name}_{i:03d}.png")
        for i, crop in enumerate(random_crops(image, per_photo, rng_b)):  # other crops: unpaired
            save_image_atomic(Image.fromarray(cartoonize(crop)), dirs["trainB"] / f"{name}_{i:03d}.png")
    for name in HELD_OUT_PHOTOS:
        for i, crop in enumerate(random_crops(photo(name), held_out_per_photo, rng_test, size=64)):
            save_image_atomic(Image.fromarray(crop), dirs["testA"] / f"{name}_{i:03d}.png")
            save_image_atomic(Image.fromarray(cartoonize(crop)), dirs["testB_true"] / f"{name}_{i:03d}.png")
    return dirs


def demo_config(output_dir: Path, dirs: dict[str, Path], overrides: list[str]) -> ExperimentConfig:
    raw = read_yaml_mapping(shipped_config_path(DEMO_CONFIG_FILE))
    raw["output_dir"] = str(output_dir / "run")
    raw.setdefault("data", {}).update(domain_a=str(dirs["trainA"]), domain_b=str(dirs["trainB"]))
    return from_dict(apply_overrides(raw, overrides)).validate()


@torch.no_grad()
def translate_arrays(g_ab: torch.nn.Module, images: list[np.ndarray]) -> list[np.ndarray]:
    batch = from_uint8(torch.stack([torch.from_numpy(im.copy()).permute(2, 0, 1) for im in images]))
    return list(to_uint8(g_ab(batch)).numpy())


def score(predictions: list[np.ndarray], truths: list[np.ndarray]) -> dict[str, float]:
    psnr = [metrics.peak_signal_noise_ratio(t, p, data_range=255) for p, t in zip(predictions, truths)]
    ssim = [metrics.structural_similarity(t, p, channel_axis=2, data_range=255)
            for p, t in zip(predictions, truths)]
    return {"psnr": float(np.mean(psnr)), "ssim": float(np.mean(ssim))}


class DemoStopped(RuntimeError):
    """Training was stopped by a signal: there is no trained model to evaluate yet."""


def run_demo(output_dir: str | Path = "demo_out", overrides: list[str] | None = None,
             resume: bool = False) -> Path:
    """Build data, train, evaluate on held-out photos; returns the report's path.

    Raises DemoStopped when SIGTERM/SIGINT ends training early: a report of the half-trained
    model would pass for the demo's result."""
    from cyclestyle.checkpoint import load_generators
    from cyclestyle.train.trainer import Trainer

    output_dir = Path(output_dir)
    started = time.perf_counter()
    dirs = build_dataset(output_dir / "data")
    config = demo_config(output_dir, dirs, overrides or [])
    log.info("demo: training %s for %d steps on CPU-sized settings; run folder %s",
             config.model.generator, config.train.max_steps, config.output_dir)
    trainer = Trainer(config, resume=resume or None)
    checkpoint = trainer.fit()
    if trainer.stopped_by:
        raise DemoStopped(
            f"demo stopped by {trainer.stopped_by} at step {trainer.step} of "
            f"{config.train.max_steps} (checkpoint {checkpoint}); not evaluated. Continue with "
            f"`cyclestyle demo --output-dir {output_dir} --resume` and the same --set options")
    train_seconds = time.perf_counter() - started
    g_ab, _, _ = load_generators(checkpoint)
    names = sorted(p.name for p in dirs["testA"].iterdir())
    photos = [np.asarray(Image.open(dirs["testA"] / n).convert("RGB")) for n in names]
    truths = [np.asarray(Image.open(dirs["testB_true"] / n).convert("RGB")) for n in names]
    translated = translate_arrays(g_ab, photos)
    results = {"translated": score(translated, truths), "untranslated": score(photos, truths),
               "held_out_images": len(names), "train_seconds": round(train_seconds, 1),
               "steps": config.train.max_steps, "checkpoint": str(checkpoint),
               "precision": trainer.precision, "precision_reason": trainer.precision_reason,
               "cpu_capability": _cpu_capability()}
    results["learned"], results["verdict"] = verdict(results["translated"], results["untranslated"])
    write_text_atomic(output_dir / "results.json", json.dumps(results, indent=2))
    # Columns of (photo, translation, truth), one column per held-out crop.
    grid = np.concatenate([np.concatenate(col, axis=0) for col in
                           zip(photos[:8], translated[:8], truths[:8])], axis=1)
    save_image_atomic(Image.fromarray(grid), output_dir / "held_out.png")
    full = photo("chelsea")
    full_out = translate_arrays(g_ab, [full])[0]
    save_image_atomic(Image.fromarray(np.concatenate([full, full_out, cartoonize(full)], axis=1)),
                      output_dir / "chelsea.png")
    report = output_dir / "report.html"
    write_text_atomic(report, render_report(results, config))
    log.info("demo: translated PSNR %.2f dB vs untranslated %.2f dB (SSIM %.3f vs %.3f)",
             results["translated"]["psnr"], results["untranslated"]["psnr"],
             results["translated"]["ssim"], results["untranslated"]["ssim"])
    return report


# What "learned" means: visibly closer to the truth than doing nothing, in both measures.
MIN_PSNR_GAIN_DB = 2.0


def verdict(translated: dict[str, float], untranslated: dict[str, float]) -> tuple[bool, str]:
    """(learned, why): PSNR at least MIN_PSNR_GAIN_DB above the untranslated photos' and SSIM
    above theirs."""
    gain = translated["psnr"] - untranslated["psnr"]
    problems = []
    if not gain >= MIN_PSNR_GAIN_DB:
        problems.append(f"PSNR is {gain:+.2f} dB from the untranslated photos' (needs "
                        f"+{MIN_PSNR_GAIN_DB:.0f} dB)")
    if not translated["ssim"] > untranslated["ssim"]:
        problems.append(f"SSIM {translated['ssim']:.3f} is not above the untranslated "
                        f"{untranslated['ssim']:.3f}")
    if problems:
        return False, "the model did not learn the mapping: " + "; ".join(problems)
    return True, (f"the model learned the mapping: {gain:+.2f} dB PSNR and SSIM "
                  f"{translated['ssim']:.3f} vs {untranslated['ssim']:.3f} untranslated")


def _cpu_capability() -> str:
    return torch.backends.cpu.get_cpu_capability()


def render_report(results: dict, config: ExperimentConfig) -> str:
    t, u = results["translated"], results["untranslated"]
    verdict = results["verdict"][0].upper() + results["verdict"][1:] + "."
    if not results["learned"]:
        verdict += " Train longer (--set train.max_steps=...)."
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>cyclestyle demo</title>
<style>body{{font-family:sans-serif;max-width:1100px;margin:2em auto}}td,th{{padding:4px 12px;
border-bottom:1px solid #ddd;text-align:right}}img{{image-rendering:pixelated;max-width:100%}}</style>
</head><body><h1>cyclestyle demo: photo &rarr; cartoon</h1>
<p>{results['held_out_images']} held-out photo crops (from photos never
seen in training) translated by G_AB, scored against their true cartoon renditions
(PSNR in dB and SSIM, scikit-image, higher is better).</p>
<table><tr><th></th><th>PSNR</th><th>SSIM</th></tr>
<tr><td>translated G_AB(photo)</td><td>{t['psnr']:.2f}</td><td>{t['ssim']:.3f}</td></tr>
<tr><td>untranslated photo</td><td>{u['psnr']:.2f}</td><td>{u['ssim']:.3f}</td></tr></table>
<p><b>{verdict}</b></p>
<h2>Held-out crops</h2><p>Rows: photo, translation, true cartoon.</p>
<img src="held_out.png" alt="held-out photos, translations and true cartoons">
<h2>A whole held-out photo at its own size</h2><p>Photo, translation, true cartoon.</p>
<img src="chelsea.png" alt="chelsea translated">
<h2>Settings</h2><p>{results['steps']} steps in {results['train_seconds']} s (data, training and
checkpoints) at precision {results['precision']} ({html.escape(results['precision_reason'])}). Training samples: <code>run/samples/</code>; losses: <code>run/metrics.jsonl</code>.</p>
<pre>{html.escape(config.to_yaml())}</pre></body></html>
"""
