"""Sample grids reach the trackers as images: TensorBoard (read back with its own reader) and
wandb offline (image files in the run folder)."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from cyclestyle.train.trainer import train
from tests.helpers import tiny_config, write_images


@pytest.fixture
def data_root(tmp_path):
    """CycleGAN layout with a validation split, so both sample grids are written."""
    root = tmp_path / "data"
    for split, count in (("train", 3), ("val", 2)):
        for side, seed in (("A", 1), ("B", 2)):
            write_images(root / f"{split}{side}", count, seed=seed)
    return root


def _run(root, out, tracker: str) -> None:
    train(tiny_config(("", ""), out, f"data.root={root}", f"train.tracker={tracker}",
                      "train.max_steps=2", "train.sample_every=1", "train.log_every=1"))


def test_tensorboard_reader_finds_the_sample_grids(data_root, tmp_path):
    pytest.importorskip("tensorboard", reason="tensorboard is an optional extra: "
                        "pip install 'cyclestyle[tensorboard]'")
    from tensorboard.backend.event_processing.event_accumulator import (
        IMAGES,
        SCALARS,
        EventAccumulator,
    )

    out = tmp_path / "run"
    _run(data_root, out, "tensorboard")
    # accelerate writes to output_dir/<train.project> (the hparams go to a sub-folder).
    reader = EventAccumulator(str(out / "cyclestyle"), size_guidance={IMAGES: 0, SCALARS: 0})
    reader.Reload()
    assert {"samples/train", "samples/held_out"} <= set(reader.Tags()["images"])
    assert "g_total" in reader.Tags()["scalars"]  # images sit beside the scalars
    for tag, name in (("samples/train", "step"), ("samples/held_out", "heldout_step")):
        events_of_tag = reader.Images(tag)
        assert [e.step for e in events_of_tag] == [1, 2]
        decoded = Image.open(io.BytesIO(events_of_tag[-1].encoded_image_string))
        on_disk = Image.open(out / "samples" / f"{name}_00000002.png")
        assert decoded.size == on_disk.size
        assert decoded.convert("RGB").tobytes() == on_disk.convert("RGB").tobytes()


def test_wandb_offline_keeps_the_sample_grids_in_the_run_folder(data_root, tmp_path,
                                                                monkeypatch):
    pytest.importorskip("wandb")
    for variable in ("WANDB_API_KEY", "WANDB_DIR"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "wandb_config"))
    monkeypatch.setenv("WANDB_CACHE_DIR", str(tmp_path / "wandb_cache"))
    monkeypatch.setenv("WANDB_DATA_DIR", str(tmp_path / "wandb_data"))
    monkeypatch.setenv("WANDB_SILENT", "true")
    out = tmp_path / "run"
    _run(data_root, out, "wandb")
    media = sorted((out / "wandb").glob("offline-run-*/files/media/images/samples/*.png"))
    names = [path.name.split("_")[0] for path in media]  # train_1_<hash>.png, held_out_...
    assert names.count("train") == 2 and names.count("held") == 2, media
    grid = Image.open(next(p for p in media if p.name.startswith("train_2_")))
    assert grid.size == Image.open(out / "samples" / "step_00000002.png").size
