"""`cyclestyle report RUN_DIR`: one self-contained page of a run (RUN_DIR/index.html).

Inline SVG charts (no server: it opens offline from the file system) of the losses and the
held-out FID and KID of both directions over steps, the sample grids (training stream and
held-out) newest first with a step slider and as a strip, the resolved config, throughput and
precision. Reads only what a run writes: metrics.jsonl, config.yaml, samples/step_*.png and
samples/heldout_step_*.png.
"""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

from cyclestyle.atomic import write_text_atomic

__all__ = ["ACCURACY_KEYS", "CHANGE_KEYS", "FID_KEYS", "KID_KEYS", "LOSS_KEYS", "write_report"]

LOSS_KEYS = ("g_total", "d_a", "d_b", "cycle", "nce")
# The diagnostics (train/diagnostics.py): a generator copying its input, a discriminator winning.
CHANGE_KEYS = ("change_ab", "change_ba")
ACCURACY_KEYS = ("d_a_acc_real", "d_a_acc_fake", "d_b_acc_real", "d_b_acc_fake")
# Both directions and their mean; eval_fid is G_AB's FID in runs of cyclestyle < 0.2.
FID_KEYS = ("eval_fid_a2b", "eval_fid_b2a", "eval_fid_mean", "eval_fid")
KID_KEYS = ("eval_kid_a2b", "eval_kid_b2a", "eval_kid_mean")
COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd")  # saturated: the browser test finds them
WIDTH, HEIGHT, PAD = 520, 220, 40


def write_report(run_dir: str | Path) -> Path:
    """Write RUN_DIR/index.html atomically and return its path."""
    run = Path(run_dir)
    metrics_path = run / "metrics.jsonl"
    if not metrics_path.is_file():
        raise FileNotFoundError(f"RUN_DIR: {run} is invalid: it has no metrics.jsonl; expected "
                                "the output_dir of a training run")
    rows = _read_metrics(metrics_path)
    config = (run / "config.yaml").read_text() if (run / "config.yaml").is_file() else ""
    body = [f"<h1>{html.escape(run.resolve().name)}</h1>", _summary(rows, config),
            '<div class="charts">',
            _chart("losses", "Training losses", rows, LOSS_KEYS),
            _chart("fid", "Held-out FID (lower is better)", rows, FID_KEYS),
            _chart("kid", "Held-out KID (lower is better)", rows, KID_KEYS),
            _chart("change", "Mean |G(x) - x| (near 0: the generator copies)", rows, CHANGE_KEYS),
            _chart("d_accuracy", "Discriminator accuracy on real and fake patches", rows,
                   ACCURACY_KEYS),
            "</div>",
            _samples(run, "step", "Samples: training images"),
            _samples(run, "heldout_step", "Samples: held-out images"),
            f"<h2>Resolved config</h2><pre>{html.escape(config) or '(no config.yaml)'}</pre>"]
    path = run / "index.html"
    write_text_atomic(path, _PAGE.format(title=html.escape(run.name), body="\n".join(body)))
    return path


def _read_metrics(path: Path) -> list[dict[str, Any]]:
    rows = []
    for line in path.read_text().splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:  # a line cut short by an interrupted run
            continue
        if isinstance(row, dict) and isinstance(row.get("step"), (int, float)):
            rows.append(row)
    return rows


def _series(rows: list[dict[str, Any]], key: str) -> list[tuple[float, float]]:
    return [(row["step"], float(row[key])) for row in rows
            if isinstance(row.get(key), (int, float)) and row[key] == row[key]]  # not NaN


def _chart(name: str, title: str, rows: list[dict[str, Any]], keys: tuple[str, ...]) -> str:
    """An SVG line chart of `keys` over steps, or a note when no row has them."""
    series = {key: points for key in keys if (points := _series(rows, key))}
    if not series:
        return f'<div class="chart"><h2>{title}</h2><p>not recorded in this run</p></div>'
    points = [p for pts in series.values() for p in pts]
    x0, x1 = min(p[0] for p in points), max(p[0] for p in points)
    y0, y1 = min(p[1] for p in points), max(p[1] for p in points)
    sx = (WIDTH - 2 * PAD) / ((x1 - x0) or 1)
    sy = (HEIGHT - 2 * PAD) / ((y1 - y0) or 1)
    lines, legend = [], []
    for (key, pts), colour in zip(series.items(), COLOURS):
        coords = " ".join(f"{PAD + (x - x0) * sx:.1f},{HEIGHT - PAD - (y - y0) * sy:.1f}"
                          for x, y in pts)
        lines.append(f'<polyline data-key="{key}" points="{coords}" fill="none" '
                     f'stroke="{colour}" stroke-width="2.5"/>')
        legend.append(f'<span style="color:{colour}">&#9632; {key} ({pts[-1][1]:.4g})</span>')
    axes = (f'<line x1="{PAD}" y1="{HEIGHT - PAD}" x2="{WIDTH - PAD}" y2="{HEIGHT - PAD}" '
            f'stroke="#888"/><line x1="{PAD}" y1="{PAD}" x2="{PAD}" y2="{HEIGHT - PAD}" '
            f'stroke="#888"/><text x="{PAD}" y="{HEIGHT - 10}">step {x0:g}</text>'
            f'<text x="{WIDTH - PAD}" y="{HEIGHT - 10}" text-anchor="end">{x1:g}</text>'
            f'<text x="2" y="{PAD - 6}">{y1:.4g}</text>'
            f'<text x="2" y="{HEIGHT - PAD + 14}">{y0:.4g}</text>')
    return (f'<div class="chart"><h2>{title}</h2><svg id="chart-{name}" width="{WIDTH}" '
            f'height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}">{axes}{"".join(lines)}</svg>'
            f'<div>{" ".join(legend)}</div></div>')


def _summary(rows: list[dict[str, Any]], config: str) -> str:
    """Last step, throughput and precision (the metrics' own, else config.yaml's first line)."""
    train_rows = [row for row in rows if "steps_per_s" in row]
    last = train_rows[-1] if train_rows else {}
    precision = last.get("precision") or (config.splitlines()[0].removeprefix("# precision: ")
                                          if config.startswith("# precision:") else "unknown")
    facts = [("last step", rows[-1]["step"] if rows else "none"),
             ("steps/s", _fmt(last.get("steps_per_s"))), ("images/s", _fmt(last.get("images_per_s"))),
             ("processes", last.get("world_size", "?")), ("precision", precision)]
    cells = "".join(f"<tr><th>{k}</th><td>{html.escape(str(v))}</td></tr>" for k, v in facts)
    return f'<table class="summary">{cells}</table>'


def _fmt(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, (int, float)) else "?"


def _samples(run: Path, prefix: str, title: str) -> str:
    """The newest grid large with a slider over the steps (a few lines of JS), then all of them
    as a strip; `prefix` names the files, samples/{prefix}_<step>.png."""
    samples = sorted((run / "samples").glob(f"{prefix}_*.png"), reverse=True)  # newest first
    if not samples:
        return f"<h2>{title}</h2><p>no samples/{prefix}_*.png in this run</p>"
    links = [path.relative_to(run).as_posix() for path in samples]
    steps = [int(path.stem.removeprefix(f"{prefix}_")) for path in samples]
    strip = "".join(f'<a href="{src}"><figure><img src="{src}" alt="step {step}" loading="lazy">'
                    f"<figcaption>step {step}</figcaption></figure></a>"
                    for src, step in zip(links, steps))
    data, big, label = f"SAMPLES_{prefix}", f"{prefix}-big", f"{prefix}-step"
    slider = (f'<input type="range" id="{prefix}-slider" min="0" max="{len(links) - 1}" '
              f'value="0" oninput="var s={data}[this.value];'
              f"document.getElementById('{big}').src=s[0];"
              f"document.getElementById('{label}').textContent='step '+s[1]\">"
              f'<span id="{label}">step {steps[0]}</span><br>'
              f'<img id="{big}" class="big" src="{links[0]}" alt="newest samples">'
              f"<script>var {data}={json.dumps(list(zip(links, steps)))};</script>")
    return f'<h2>{title} (newest first)</h2>{slider}<div class="strip">{strip}</div>'


_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{title}: cyclestyle run</title>
<style>
body {{ font-family: sans-serif; margin: 16px; background: #fff; color: #222; }}
.charts {{ display: flex; flex-wrap: wrap; gap: 16px; }}
.chart {{ width: 540px; }}
.chart h2, h2 {{ font-size: 16px; margin: 8px 0; }}
svg text {{ font-size: 11px; fill: #555; }}
.summary th {{ text-align: left; padding-right: 12px; }}
.strip {{ display: flex; overflow-x: auto; gap: 8px; }}
.strip img {{ height: 160px; }} .big {{ max-width: 100%; }}
figure {{ margin: 0; }} pre {{ background: #f6f6f6; padding: 8px; }}
</style></head><body>
{body}
</body></html>
"""
