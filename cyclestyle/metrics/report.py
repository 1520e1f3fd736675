"""metrics.json, report.html (sample grid + metric table + settings) and the printed summary."""

from __future__ import annotations

import html
import json
import math
import random
from pathlib import Path

import torch

from cyclestyle.atomic import atomic_write, write_text_atomic
from cyclestyle.imageio import find_images, load_image, make_grid_image, save_image_atomic
from cyclestyle.metrics.style import square_crop

__all__ = ["summary_rows", "format_table", "write_json", "write_report"]

_THUMB = 128


def _jsonable(value):
    """inf/nan are not JSON: written as the strings "inf", "-inf", "nan"."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


def write_json(results: dict, path: Path) -> None:
    with atomic_write(path, "w") as f:
        json.dump(_jsonable(results), f, indent=2, allow_nan=False)
        f.write("\n")


def summary_rows(results: dict) -> list[tuple[str, str, str]]:
    """(metric, value, where it came from) for each computed number."""
    m = results["metrics"]
    rows = []
    if "fid" in m:
        f = m["fid"]
        rows.append(("FID", f"{f['value']:.3f}", f"n_real={f['n_real']} n_fake={f['n_fake']}, "
                     f"{f['extractor']['name']} sha256 {f['extractor']['sha256'][:12]}..., "
                     f"resize {f['resize']}"))
    if "kid" in m:
        k = m["kid"]
        if not math.isfinite(k["std"]):
            spread = "no std: " + k["std_method"].removeprefix("none: ")
        elif k["subset_size"] < k["requested_subset_size"]:
            spread = "± std over subsets of half the smaller set (conservative)"
        else:
            spread = "± std over subsets"
        rows.append(("KID ×10³", f"{k['mean_x1e3']:.3f} ± {k['std_x1e3']:.3f}",
                     f"{k['subsets']} subsets of {k['subset_size']}, seed {k['seed']}; "
                     f"{spread}"))
    if "style" in m:
        s = m["style"]
        rows.append(("Style Gram distance", f"{s['gram']['sum']:.4g}",
                     f"sum over {', '.join(s['layers'])}; {s['vgg_weights']}"))
        rows.append(("Style moment distance", f"{s['moments']['mean']:.4g}",
                     "mean over layers of AdaIN mean/std MSE"))
    if "content" in m:
        c = m["content"]
        rows.append(("SSIM", f"{c['ssim']:.4f}", f"{c['n_pairs']} source/translation pairs"))
        rows.append(("PSNR (dB)", f"{c['psnr']:.2f}", "higher = closer to the source"))
        if c.get("lpips") is not None:
            rows.append(("LPIPS", f"{c['lpips']:.4f}", "lower = closer to the source"))
    for name, reason in results.get("skipped", {}).items():
        rows.append((name, "skipped", reason))
    return rows


def format_table(rows: list[tuple[str, str, str]]) -> str:
    width = max(len(r[0]) for r in rows) if rows else 0
    vwidth = max(len(r[1]) for r in rows) if rows else 0
    return "\n".join(f"{name:<{width}}  {value:>{vwidth}}  {note}" for name, value, note in rows)


def _thumbs(paths: list[Path]) -> torch.Tensor:
    return torch.stack([square_crop(load_image(path), _THUMB) for path in paths])


def _sample_grid(results: dict, path: Path, pairs: list[tuple[Path, Path]] | None,
                 count: int = 6, seed: int = 0) -> bool:
    inputs = results["inputs"]
    rng = random.Random(seed)
    rows, labels = [], []
    if pairs:
        chosen = sorted(rng.sample(pairs, min(count, len(pairs))))
        rows += [_thumbs([Path(s) for s, _ in chosen]), _thumbs([Path(f) for _, f in chosen])]
        labels += ["source", "translated"]
    else:
        fakes = find_images(inputs["fake"]["path"])
        rows.append(_thumbs(sorted(rng.sample(fakes, min(count, len(fakes))))))
        labels.append("translated")
    reals = find_images(inputs["real"]["path"])
    real = _thumbs(sorted(rng.sample(reals, min(rows[0].shape[0], len(reals)))))
    if real.shape[0] < rows[0].shape[0]:  # pad with white so all rows have equal length
        real = torch.cat([real, torch.ones(rows[0].shape[0] - real.shape[0], *real.shape[1:])])
    rows.append(real[: rows[0].shape[0]])
    labels.append("real target")
    save_image_atomic(make_grid_image(rows, labels), path)
    return True


def _settings_html(settings: dict) -> str:
    items = "".join(f"<li><b>{html.escape(str(k))}</b>: {html.escape(json.dumps(_jsonable(v)))}"
                    "</li>" for k, v in settings.items())
    return f"<ul>{items}</ul>"


def write_report(results: dict, out_dir: Path,
                 pairs: list[tuple[Path, Path]] | None = None) -> Path:
    """report.html beside samples.png (source / translated / real rows; source only with
    `pairs`); the settings of each metric are listed under the table."""
    out_dir.mkdir(parents=True, exist_ok=True)
    grid = _sample_grid(results, out_dir / "samples.png", pairs)
    rows = "".join(f"<tr><td>{html.escape(n)}</td><td class=v>{html.escape(v)}</td>"
                   f"<td>{html.escape(note)}</td></tr>" for n, v, note in summary_rows(results))
    details = "".join(f"<h3>{html.escape(name)}</h3>{_settings_html(values)}"
                      for name, values in results["metrics"].items())
    inputs = "".join(f"<li><b>{k}</b>: {html.escape(v['path'])} ({v['n']} images)</li>"
                     for k, v in results["inputs"].items() if v)
    page = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>cyclestyle evaluation</title>
<style>body{{font-family:sans-serif;max-width:1000px;margin:2em auto;color:#222}}
table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:4px 10px;text-align:left}}
td.v{{text-align:right;font-family:monospace}}li{{font-size:90%}}</style></head><body>
<h1>cyclestyle evaluation</h1>
<p>{html.escape(results['created'])} · cyclestyle {html.escape(results['cyclestyle_version'])}</p>
<ul>{inputs}</ul>
{'<img src="samples.png" alt="source / translated / real target samples">' if grid else ''}
<h2>Metrics</h2>
<table><tr><th>metric</th><th>value</th><th>how</th></tr>{rows}</table>
<p>FID, KID, style distances and LPIPS: lower is better. SSIM, PSNR: higher means more of the
source survives. FID is biased upwards for small sets: compare only numbers with equal N,
extractor and resize mode.</p>
<h2>Settings behind each number</h2>{details}
</body></html>
"""
    path = out_dir / "report.html"
    write_text_atomic(path, page)
    return path
