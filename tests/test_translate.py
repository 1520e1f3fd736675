"""`cyclestyle translate` and the Translator API: sizes, safety, resume, interruption, processes."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cyclestyle.cli import main
from cyclestyle.models import create_generator, list_generators
from cyclestyle.models.layers import pad_to_multiple
from cyclestyle.runtime import retain_freed_memory
from cyclestyle.translate.runner import plan_jobs, translate_files
from cyclestyle.translate.tiling import blend_window, tile_starts, tiled_apply
from cyclestyle.translate.translator import Translator, to_fast_cpu_layout

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """A tiny unet_attn CycleGAN trained for 2 steps (about 2 s)."""
    from cyclestyle.train.config import load_config
    from cyclestyle.train.trainer import Trainer
    from tests.helpers import write_images

    root = tmp_path_factory.mktemp("ckpt")
    a, b = write_images(root / "A", 3, seed=1), write_images(root / "B", 3, seed=2)
    overrides = [f"data.domain_a={a}", f"data.domain_b={b}", f"output_dir={root / 'run'}",
                 "train.max_steps=2", "train.progress=false"]
    Trainer(load_config(REPO / "configs/tiny.yaml", overrides)).fit()
    return root / "run"


def photo(width: int, height: int, seed: int = 0, mode: str = "RGB") -> Image.Image:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width]
    pixels = (rng.uniform(0, 255, 3) + 90 * np.sin(xx[..., None] / 7 + yy[..., None] / 11
                                                 + np.arange(3))) % 255
    return Image.fromarray(pixels.astype(np.uint8), "RGB").convert(mode)


def make_folder(folder: Path, count: int, sizes=((40, 30), (33, 51), (40, 30))) -> Path:
    for i in range(count):
        sub = folder / ("nested" if i % 3 == 2 else "")
        sub.mkdir(parents=True, exist_ok=True)
        photo(*sizes[i % len(sizes)], seed=i).save(sub / f"p{i:03d}.{'png' if i % 2 else 'jpg'}")
    return folder


def translate(checkpoint: Path, inp: Path, out: Path, *extra: str) -> int:
    return main(["translate", "--checkpoint", str(checkpoint), "--input", str(inp), "--output",
                 str(out), "--device", "cpu", "--workers", "0", "--no-progress", *extra])


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def tree_hashes(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


# ---------------------------------------------------------------- the Python API


def conv_only_generator(base_channels: int = 4) -> torch.nn.Module:
    """A tiny U-Net without attention: big images stay fast (attention is quadratic in pixels)."""
    return create_generator("unet_attn", base_channels=base_channels, channel_mults=[1, 1],
                            depth=2, attention_resolutions=[], num_res_blocks=1)


def test_translator_keeps_odd_sizes_and_accepts_tensors(checkpoint):
    out = Translator(conv_only_generator(), device="cpu").translate(photo(333, 517))
    assert out.size == (333, 517) and out.mode == "RGB"
    translator = Translator.from_checkpoint(checkpoint, "b2a", device="cpu")
    assert translator.translate(photo(51, 33)).size == (51, 33)
    batch = torch.rand(2, 3, 37, 45) * 2 - 1
    result = translator.translate(batch)
    assert result.shape == batch.shape and result.abs().max() <= 1
    assert torch.allclose(translator.translate(batch[0]), result[0], atol=1e-5)


def test_translator_keeps_the_alpha_of_an_rgba_pil_image():
    image = photo(41, 29, mode="RGBA")
    alpha = np.tile(np.linspace(0, 255, 41, dtype=np.uint8), (29, 1))
    image.putalpha(Image.fromarray(alpha, "L"))
    out = Translator(conv_only_generator(), device="cpu").translate(image)
    assert out.mode == "RGBA" and out.size == (41, 29)
    assert np.array_equal(np.asarray(out.getchannel("A")), alpha)
    smaller = Translator(conv_only_generator(), device="cpu", size=20).translate(image)
    assert smaller.mode == "RGBA" and smaller.size == (20, 14)  # the alpha is rescaled too


@pytest.mark.parametrize(("height", "width"), [(9, 11), (67, 141)])
def test_padding_is_undone_in_place_when_top_and_left_padding_differ(height, width):
    """An identity network inside the ResNet generator's pad-to-stride and crop: the output is
    the input pixel for pixel only if the crop puts rows and columns back where they were (a
    crop taking the top offset for the left one passes when both are equal)."""
    generator = create_generator("resnet", base_channels=1, n_blocks=1)
    generator.net = torch.nn.Identity()
    stride = generator.stride
    _, crop = pad_to_multiple(torch.zeros(1, 3, height, width), stride, min_size=2 * stride)
    assert crop.top != crop.left
    x = torch.rand(2, 3, height, width) * 2 - 1
    assert torch.equal(generator(x), x)
    image = photo(width, height)
    out = Translator(generator, device="cpu").translate(image)
    assert np.array_equal(np.asarray(out), np.asarray(image))


def test_translator_rejects_tiny_images_and_bad_settings(checkpoint):
    translator = Translator.from_checkpoint(checkpoint, device="cpu")
    with pytest.raises(ValueError, match=r"1x1; cyclestyle translates images of at least 8x8"):
        translator.translate(photo(1, 1))
    with pytest.raises(ValueError, match="fp16.*CUDA"):
        Translator.from_checkpoint(checkpoint, device="cpu", precision="fp16")
    with pytest.raises(ValueError, match="direction='sideways'"):
        Translator.from_checkpoint(checkpoint, "sideways")
    with pytest.raises(ValueError, match="tile_overlap=40 must lie between 0 and half"):
        Translator.from_checkpoint(checkpoint, device="cpu", tile=64, tile_overlap=40)


@pytest.mark.parametrize("name", list_generators())
def test_fast_cpu_layout_translates_like_the_plain_generator(name):
    """channels_last with InstanceNorm as GroupNorm: the same function to float32 rounding."""
    import copy

    small = {"unet_attn": dict(base_channels=8, channel_mults=[1, 2], depth=2,
                               attention_resolutions=[2, 4]),
             "resnet": dict(base_channels=4, n_blocks=2),
             # small too: the full 9-block net's float32 rounding alone reached 1.0001e-4
             "cut_resnet": dict(base_channels=8, n_blocks=3)}
    torch.manual_seed(0)
    plain = create_generator(name, **small.get(name, {})).eval()
    with torch.no_grad():
        for param in plain.parameters():  # random attention output too (it starts at zero)
            param.add_(0.1 * torch.randn_like(param))
    fast = to_fast_cpu_layout(copy.deepcopy(plain))
    assert not any(isinstance(m, torch.nn.InstanceNorm2d) for m in fast.modules())
    assert all(p.is_contiguous(memory_format=torch.channels_last)
               for p in fast.parameters() if p.dim() == 4)
    assert fast.state_dict().keys() == plain.state_dict().keys()
    images = torch.rand(2, 3, 37, 45) * 2 - 1
    with torch.inference_mode():
        expected = plain(images)
    # fp32: `auto` is bf16 on a CPU with native bf16, which would hide nothing here.
    got = Translator(fast, device="cpu", channels_last=True, precision="fp32").translate(images)
    assert expected.std() > 0.05 and (got - expected).abs().max() <= 1e-4


def test_translator_defaults_on_cpu_are_batch_1_channels_last():
    translator = Translator(conv_only_generator(), device="cpu")
    assert translator.batch_size == 1 and translator.channels_last
    plain = Translator(conv_only_generator(), device="cpu", channels_last=False, batch_size=3)
    assert plain.batch_size == 3 and not plain.channels_last
    assert any(isinstance(m, torch.nn.InstanceNorm2d) for m in plain.generator.modules())


def test_glibc_is_asked_to_keep_freed_memory():
    if not sys.platform.startswith("linux"):
        pytest.skip("mallopt is glibc's (Linux)")
    assert retain_freed_memory() is True


def test_bf16_autocast_on_cpu_stays_close_to_fp32(checkpoint):
    image = photo(48, 40)
    fp32 = np.asarray(Translator.from_checkpoint(checkpoint, device="cpu",
                                                 precision="fp32").translate(image))
    bf16 = Translator.from_checkpoint(checkpoint, device="cpu", precision="bf16").translate(image)
    assert np.abs(fp32.astype(int) - np.asarray(bf16).astype(int)).mean() < 8


def test_max_size_and_size_rescale_keeping_aspect(checkpoint):
    image = photo(200, 100)
    assert Translator.from_checkpoint(checkpoint, device="cpu", max_size=64).translate(
        image).size == (64, 32)
    assert Translator.from_checkpoint(checkpoint, device="cpu", max_size=500).translate(
        image).size == (200, 100)
    assert Translator.from_checkpoint(checkpoint, device="cpu", size=300).translate(
        image).size == (300, 150)


# ---------------------------------------------------------------- tiling


def test_tiles_cover_and_blend_weights_are_smooth():
    assert tile_starts(100, 40, 10) == [0, 30, 60]
    assert tile_starts(30, 40, 10) == [0]
    window = blend_window(40, 10, fade_start=True, fade_end=True)
    assert window[0] < 0.05 and window[-1] < 0.05 and window[10:30].eq(1).all()
    assert torch.all(window[1:10] > window[:9])  # rises monotonically
    # Neighbouring tiles' fades are complementary: weights sum to 1 across the overlap.
    assert torch.allclose(window[30:] + window[:10], torch.ones(10))


def test_tiled_apply_matches_whole_image_for_pointwise_and_local_functions():
    images = torch.rand(2, 3, 70, 93) * 2 - 1
    pointwise = lambda x: torch.tanh(2 * x)  # noqa: E731
    assert torch.allclose(tiled_apply(pointwise, images, 32, 8, max_batch=5), pointwise(images),
                          atol=1e-6)
    blur = torch.nn.Conv2d(3, 3, 3, padding=1, padding_mode="reflect")
    with torch.no_grad():
        whole, tiled = blur(images), tiled_apply(blur, images, 32, 8, max_batch=3)
    # A 3x3 conv differs only in each tile's outermost pixel, which has near-zero weight.
    assert (whole - tiled).abs().max() < 0.05


def test_4000x3000_image_translates_in_tiles_at_full_size():
    # The smallest ResNet generator (1 channel): the test is about tiling, not the model.
    generator = create_generator("resnet", base_channels=1, n_blocks=1)
    translator = Translator(generator, device="cpu", tile=1024, tile_overlap=32, batch_size=2)
    out = translator.translate(photo(4000, 3000))
    assert out.size == (4000, 3000)
    pixels = np.asarray(out)
    assert pixels.std() > 0  # an actual picture, not a constant fill


# ---------------------------------------------------------------- the command


def test_folder_is_mirrored_at_input_sizes_and_inputs_stay_byte_identical(checkpoint, tmp_path,
                                                                          capsys):
    inp = make_folder(tmp_path / "in", 6)
    before = tree_hashes(inp)
    assert translate(checkpoint, inp, tmp_path / "out", "--batch-size", "2") == 0
    assert tree_hashes(inp) == before
    for source in inp.rglob("p*"):
        target = tmp_path / "out" / source.relative_to(inp)
        with Image.open(source) as a, Image.open(target) as b:
            assert a.size == b.size
    assert "translated 6 image(s)" in capsys.readouterr().out
    assert oct((tmp_path / "out/p001.png").stat().st_mode & 0o777) != oct(0o600)


def test_corrupt_and_tiny_files_are_reported_and_the_rest_translated(checkpoint, tmp_path, capsys):
    inp = make_folder(tmp_path / "in", 3)
    (inp / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    photo(1, 1).save(inp / "dot.png")
    assert translate(checkpoint, inp, tmp_path / "out", "--format", "png") == 1
    out = capsys.readouterr().out
    assert "translated 3 image(s)" in out and "2 failed" in out
    assert f"FAILED {inp / 'broken.png'}" in out and "1x1" in out
    assert len(list((tmp_path / "out").rglob("*.png"))) == 3


def test_alpha_16bit_and_grayscale_inputs(checkpoint, tmp_path):
    inp = tmp_path / "in"
    inp.mkdir()
    rgba = photo(41, 29, mode="RGBA")
    alpha = np.tile(np.linspace(0, 255, 41, dtype=np.uint8), (29, 1))
    rgba.putalpha(Image.fromarray(alpha, "L"))
    rgba.save(inp / "cutout.png")
    gray16 = (np.asarray(photo(30, 20, mode="L"), dtype=np.uint16) * 257)
    Image.fromarray(gray16).save(inp / "deep.png")
    photo(25, 35, mode="L").save(inp / "gray.jpg")
    assert translate(checkpoint, inp, tmp_path / "out") == 0
    with Image.open(tmp_path / "out/cutout.png") as out:
        assert out.mode == "RGBA" and out.size == (41, 29)
        assert np.array_equal(np.asarray(out.getchannel("A")), alpha)
    with Image.open(tmp_path / "out/deep.png") as out:
        assert out.size == (30, 20) and out.mode == "RGB"
    with Image.open(tmp_path / "out/gray.jpg") as out:
        assert out.size == (25, 35)


def test_output_paths_that_would_touch_inputs_are_refused(checkpoint, tmp_path):
    inp = make_folder(tmp_path / "in", 3)
    with pytest.raises(ValueError, match="inside the input folder"):
        plan_jobs(inp, inp / "translated")
    with pytest.raises(ValueError, match="would overwrite an input"):
        plan_jobs(inp, inp, allow_inside_input=True)
    (inp / "p000.png").write_bytes((inp / "p001.png").read_bytes())
    with pytest.raises(ValueError, match="would both be written to"):
        plan_jobs(inp, tmp_path / "out", fmt="png")
    listing = tmp_path / "list.txt"
    listing.write_text(f"# photos\n{inp / 'p001.png'}\n\nin/p000.jpg\n")
    jobs = plan_jobs(listing, tmp_path / "out")
    assert [j.target.name for j in jobs] == ["p001.png", "p000.jpg"]
    # Asked explicitly, the output may live inside the input tree; its files are not inputs.
    assert translate(checkpoint, inp, inp / "translated", "--allow-inside-input") == 0
    assert len(plan_jobs(inp, inp / "translated", allow_inside_input=True)) == 4


def test_skip_existing_resumes_where_a_run_stopped(checkpoint, tmp_path, capsys):
    inp = make_folder(tmp_path / "in", 5)
    out = tmp_path / "out"
    assert translate(checkpoint, inp, out) == 0
    (out / "p003.png").unlink()
    stamps = {p: p.stat().st_mtime_ns for p in out.rglob("p*")}
    capsys.readouterr()
    assert translate(checkpoint, inp, out, "--skip-existing") == 0
    assert "translated 1 image(s)" in capsys.readouterr().out
    assert (out / "p003.png").is_file()
    assert all(p.stat().st_mtime_ns == stamp for p, stamp in stamps.items())


@pytest.mark.parametrize("streams", [1, 2])
def test_workers_buckets_and_streams_give_the_same_images_as_one_by_one(checkpoint, tmp_path,
                                                                         streams):
    inp = make_folder(tmp_path / "in", 7)
    translator = Translator.from_checkpoint(checkpoint, device="cpu", batch_size=3,
                                            precision="fp32")  # auto may pick bf16
    jobs = plan_jobs(inp, tmp_path / "out", fmt="png")
    threads = torch.get_num_threads()
    summary = translate_files(translator, jobs, num_workers=2, progress=False, streams=streams)
    assert summary.translated == 7 and not summary.failed
    assert torch.get_num_threads() == threads  # each stream's share is given back
    for job in jobs:
        expected = np.asarray(translator.translate(Image.open(job.source)))
        with Image.open(job.target) as got:
            assert np.abs(np.asarray(got).astype(int) - expected).max() <= 1


def start_slow_translation(checkpoint: Path, tmp_path: Path, **popen_kwargs):
    """60 images translated one at a time in a subprocess, returned once 5 are written, so the
    caller can stop it mid-way."""
    inp = make_folder(tmp_path / "in", 60, sizes=((64, 48),))
    out = tmp_path / "out"
    command = [sys.executable, "-m", "cyclestyle.cli", "translate", "--checkpoint",
               str(checkpoint), "--input", str(inp), "--output", str(out), "--device", "cpu",
               "--workers", "1", "--batch-size", "1", "--no-progress", "--format", "png"]
    process = subprocess.Popen(command, cwd=REPO, **popen_kwargs)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and len(list(out.rglob("p*.png"))) < 5:
        time.sleep(0.02)
    return inp, out, process


def test_killed_run_leaves_only_complete_images_and_a_rerun_finishes(checkpoint, tmp_path):
    inp, out, process = start_slow_translation(checkpoint, tmp_path, stdout=subprocess.DEVNULL,
                                               stderr=subprocess.DEVNULL)
    process.send_signal(signal.SIGKILL)
    process.wait()
    written = list(out.rglob("p*.png"))
    assert 5 <= len(written) < 60, "the run should have been killed mid-way"
    for path in written:
        with Image.open(path) as image:
            image.load()  # raises on a truncated file
    leftovers = [p for p in out.rglob("*") if p.is_file() and p not in written]
    assert all(p.name.startswith(".") and p.name.endswith(".tmp") for p in leftovers)
    assert translate(checkpoint, inp, out, "--skip-existing", "--format", "png") == 0
    files = [p for p in out.rglob("*") if p.is_file()]
    assert len(files) == 60 and not any(p.name.startswith(".") for p in files)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_sigterm_stops_cleanly_and_skip_existing_finishes(checkpoint, tmp_path, signum):
    """Preemption: the images in flight are finished, no temp file is left, the summary says
    how to resume, and the exit code says the run is not complete."""
    inp, out, process = start_slow_translation(checkpoint, tmp_path, stdout=subprocess.PIPE,
                                               stderr=subprocess.STDOUT, text=True)
    process.send_signal(signum)
    log, _ = process.communicate(timeout=120)
    assert process.returncode == 1, log
    assert "interrupted: rerun the same command with --skip-existing" in log
    assert "Traceback" not in log
    # The warning the signal prints speaks of translation, not of training's checkpoint.
    received = next(line for line in log.splitlines() if " received: " in line)
    assert received.endswith(f"{signal.Signals(signum).name} received: finishing the images in "
                             "flight, then stopping") and "checkpoint" not in received
    files = [p for p in out.rglob("*") if p.is_file()]
    assert 5 <= len(files) < 60, "the run should have stopped mid-way"
    assert not any(p.name.startswith(".") for p in files)  # in-flight writes were finished
    for path in files:
        with Image.open(path) as image:
            image.load()
    assert translate(checkpoint, inp, out, "--skip-existing", "--format", "png") == 0
    assert len([p for p in out.rglob("*") if p.is_file()]) == 60


def test_two_processes_translate_every_file_exactly_once(checkpoint, tmp_path):
    inp = make_folder(tmp_path / "in", 9)
    out = tmp_path / "out"
    env = {**os.environ, "ACCELERATE_USE_CPU": "true", "OMP_NUM_THREADS": "1"}
    # `accelerate launch --cpu --num_processes 2` starts ONE process; --multi_gpu with
    # ACCELERATE_USE_CPU starts two CPU processes.
    command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu",
               "--num_processes", "2", "--num_machines", "1", "--mixed_precision", "no",
               "--dynamo_backend", "no", "--main_process_port", str(free_port()),
               "-m", "cyclestyle.cli", "translate", "--checkpoint", str(checkpoint), "--input",
               str(inp), "--output", str(out), "--device", "cpu", "--workers", "0",
               "--no-progress"]
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "rank 1 of 2" in result.stderr and "rank 0 of 2" in result.stderr
    assert "translated 9 image(s)" in result.stdout  # gathered over both ranks: none twice
    assert result.stdout.count("translated ") == 1  # only rank 0 prints the summary
    assert sorted(p.relative_to(out) for p in out.rglob("p*")) == sorted(
        p.relative_to(inp) for p in inp.rglob("p*"))


@pytest.mark.slow
def test_translate_benchmark_quick_run_reports_both_methods(tmp_path):
    """scripts/bench_translate.py --quick (tiny model, small images; ~15 s on 2 idle cores)."""
    from tests.helpers import run_benchmark

    report = run_benchmark("bench_translate.py", tmp_path / "bench.json", "--quick")
    assert report["model"]["source"] == "configs/tiny.yaml"
    for case in report["throughput"]:
        ours, naive = case["ours"]["median_images_per_s"], case["naive"]["median_images_per_s"]
        assert ours > 0 and naive > 0 and case["speedup"] == round(ours / naive, 2)
        assert case["ours"]["peak_rss_mib"] > 0 and case["naive"]["peak_rss_mib"] > 0
    tiled, untiled = report["memory"]
    assert tiled["tile"] == 128 and untiled["tile"] is None
    assert tiled["peak_rss_mib"] > 0 and untiled["peak_rss_mib"] > 0
    assert "attention" in report["memory_note"]


def test_the_input_may_be_the_first_argument(checkpoint, tmp_path):
    """`cyclestyle translate photo.png --output out.png`, as the README's video example has it."""
    (tmp_path / "in").mkdir()
    Image.fromarray(np.full((20, 28, 3), 90, np.uint8)).save(tmp_path / "in" / "photo.png")
    out = tmp_path / "out"
    assert main(["translate", str(tmp_path / "in" / "photo.png"), "--checkpoint", str(checkpoint),
                 "--output", str(out), "--no-progress"]) == 0
    assert Image.open(out / "photo.png").size == (28, 20)


@pytest.mark.parametrize("argv, message", [
    ([], "--input: missing: INPUT is required, as the first argument or as --input"),
    (["a.png", "--input", "b.png"], "--input: 'b.png' is invalid: the first argument says 'a.png'"),
])
def test_the_input_is_given_exactly_once(checkpoint, tmp_path, capsys, argv, message):
    code = main(["translate", *argv, "--checkpoint", str(checkpoint), "--output",
                 str(tmp_path / "out")])
    assert code == 2 and message in capsys.readouterr().err
