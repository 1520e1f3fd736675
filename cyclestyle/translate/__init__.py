"""Translation with a trained generator: the Translator, the folder runner, its writer,
tiling, videos, export, release folders, loading from anywhere (sources), the reference's model zoo,
and the `translate`/`export`/`push`/`pretrained` commands.

    from cyclestyle.translate import Translator
    Translator.from_checkpoint("runs/p2p").translate(image)

Exports load on first use, so `cyclestyle translate --help` does not import torch.
"""

from cyclestyle._lazy import lazy_exports

__getattr__, __dir__ = lazy_exports(__name__, {
    "Translator": "cyclestyle.translate.translator",
    "to_fast_cpu_layout": "cyclestyle.translate.translator",
    "plan_jobs": "cyclestyle.translate.runner",
    "translate_files": "cyclestyle.translate.runner",
    "translate_video": "cyclestyle.translate.video",
    "VideoSettings": "cyclestyle.translate.video",
    "export_generator": "cyclestyle.translate.export",
    "load_exported": "cyclestyle.translate.export",
    "TranslateOptions": "cyclestyle.translate.options",
    "load_model": "cyclestyle.translate.sources",
    "read_release": "cyclestyle.translate.release",
    "write_release": "cyclestyle.translate.release",
})
