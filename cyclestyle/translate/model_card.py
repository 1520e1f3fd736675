"""The README.md of a release folder: a Hugging Face model card.

YAML front matter the Hub reads (library name, tags, pipeline; `license:` left empty for the
author), what the model is, a usage snippet, how it was trained (data folder names and image
counts, steps, precision, losses) and the evaluation numbers of a `cyclestyle evaluate`
metrics.json with their N, extractor sha256 and resize mode. Plain text from the release's
config.json: no torch here.
"""

from __future__ import annotations

import json
import math
from typing import Any


def model_card(config: dict[str, Any], metrics: dict | None, samples: list[str],
               repo_id: str | None) -> str:
    """README.md: YAML front matter for the Hub (license left empty for the author), then what
    the model is, how to use it, how it was trained and how it scored."""
    repo = repo_id or "USER/NAME"
    sections = [_front_matter(), _summary(config), _usage(config, repo), _training(config),
                _evaluation(metrics), _samples(samples)]
    return "\n".join(s for s in sections if s)


def _front_matter() -> str:
    return ("---\nlibrary_name: cyclestyle\nlicense:\ntags:\n- cyclestyle\n- cyclegan\n"
            "- image-to-image\n- unpaired-image-to-image-translation\n"
            "pipeline_tag: image-to-image\n---\n")


def _domain_names(config: dict[str, Any]) -> tuple[str, str]:
    domains = (config.get("training") or {}).get("domains") or {}
    return ((domains.get("a") or {}).get("name") or "domain A",
            (domains.get("b") or {}).get("name") or "domain B")


def _summary(config: dict[str, Any]) -> str:
    a, b = _domain_names(config)
    directions = config["directions"]
    what = {"a2b": f"`a2b` translates {a} into {b}", "b2a": f"`b2a` translates {b} into {a}"}
    origin = ""
    if config.get("reference"):
        ref = config["reference"]
        origin = (f" The weights are {ref.get('implementation')}'s {ref.get('netG')} generator "
                  f"{ref.get('name') or ref.get('file', '')}, converted to cyclestyle.")
    return (f"# {a} ↔ {b} ({config['generator']})\n\n"
            f"An unpaired image-to-image translator for "
            f"[cyclestyle](https://pypi.org/project/cyclestyle/): "
            f"{'; '.join(what[d] for d in directions)}. Generator `{config['generator']}` with "
            f"{_args(config['generator_args'])}; {config.get('weights', 'trained')} weights."
            f"{origin}\n\nLicense: not stated yet; the author fills in `license:` above.\n")


def _args(args: dict[str, Any]) -> str:
    return ", ".join(f"{k}={json.dumps(v)}" for k, v in args.items()) or "its defaults"


def _usage(config: dict[str, Any], repo: str) -> str:
    direction = next(iter(config["directions"]))
    low, high = config["pixel_range"]
    size = config.get("image_size")
    trained = f"; it was trained on {size}x{size} crops" if size else ""
    return (f"## Usage\n\n```bash\npip install cyclestyle\ncyclestyle translate --checkpoint "
            f"hf://{repo} --direction {direction} --input photos/ --output translated/\n```\n\n"
            f"```python\nfrom PIL import Image\nfrom cyclestyle.translate import Translator\n\n"
            f"translator = Translator.from_pretrained(\"{repo}\", direction=\"{direction}\")\n"
            f"translator.translate(Image.open(\"photo.jpg\")).save(\"translated.png\")\n```\n\n"
            f"Images of any size are translated at their own size (padded to a multiple of "
            f"{config.get('stride')} and cropped back){trained}. Tensors are RGB in "
            f"[{low}, {high}].\n")


def _training(config: dict[str, Any]) -> str:
    training = config.get("training")
    if not training:
        if config.get("reference"):
            ref = config["reference"]
            return (f"## Training\n\nTrained by {ref.get('implementation')} "
                    f"({ref.get('url') or ref.get('file', '')}); see its documentation.\n")
        return "## Training\n\nNot recorded.\n"
    rows = []
    for side in ("a", "b"):
        domain = training["domains"][side]
        count = (f"{domain['images']} images" if domain.get("images") is not None
                 else "image count unknown: folder not found at export")
        name = f"`{domain['name']}`" if domain.get("name") else "folder not recorded"
        rows.append((f"data {side.upper()}", f"{name} ({count})"))
    rows += [("steps", f"{training.get('step')} of {training.get('max_steps')} (batch size "
                       f"{training.get('batch_size')})"),
             ("precision", str(training.get("precision"))),
             ("resolution", f"{config.get('image_size')}x{config.get('image_size')} crops"),
             ("weights", f"{config.get('weights')} (EMA decay {training.get('ema_decay')})"
              if config.get("weights") == "ema" else str(config.get("weights"))),
             ("losses", ", ".join(f"{k} {v}" for k, v in training.get("loss", {}).items())),
             ("cyclestyle", str(training.get("trained_with")))]
    return "## Training\n\n" + _table(("", ""), rows)


def _evaluation(metrics: dict | None) -> str:
    if metrics is None:
        return ("## Evaluation\n\nNot evaluated here. `cyclestyle evaluate --real DIR --fake DIR "
                "--out DIR` writes a metrics.json; pass it with `--metrics`.\n")
    results = metrics.get("metrics", {})
    rows = []
    if "fid" in results:
        fid = results["fid"]
        rows.append(("FID", _number(fid.get("value"), 2), _provenance(fid)))
    if "kid" in results:
        kid = results["kid"]
        rows.append(("KID ×10³", f"{_number(kid.get('mean_x1e3'), 2)} ± "
                     f"{_number(kid.get('std_x1e3'), 2)}", _provenance(kid) + f"; "
                     f"{kid.get('subsets')} subsets of {kid.get('subset_size')}"))
    if "style" in results:
        rows.append(("Style Gram distance", _number(results["style"].get("gram", {}).get("sum"),
                                                     4), "VGG19 Gram matrices"))
    if "content" in results:
        content = results["content"]
        rows.append(("SSIM to source", _number(content.get("ssim"), 4),
                     f"{content.get('n_pairs')} pairs"))
    skipped = metrics.get("skipped") or {}
    text = "## Evaluation\n\n" + (_table(("metric", "value", "how"), rows) if rows else "")
    if skipped:
        text += "\nSkipped: " + "; ".join(f"{k} ({v})" for k, v in skipped.items()) + "\n"
    return text + f"\nFrom `metrics.json` (cyclestyle {metrics.get('cyclestyle_version')}, " \
                  f"{metrics.get('created')}).\n"


def _provenance(result: dict[str, Any]) -> str:
    extractor = result.get("extractor") or {}
    return (f"N real {result.get('n_real')}, N fake {result.get('n_fake')}; extractor "
            f"{extractor.get('name')} sha256 `{extractor.get('sha256')}`; resize "
            f"{result.get('resize')}")


def _number(value: Any, digits: int) -> str:
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return f"{value:.{digits}f}"
    return str(value)


def _samples(samples: list[str]) -> str:
    if not samples:
        return ""
    return "## Samples\n\n" + "\n".join(f"![sample {i}]({path})"
                                        for i, path in enumerate(samples, 1)) + "\n"


def _table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"
