"""Video in, video out (cyclestyle/videoio.py, cyclestyle/translate/video.py): frames, frame
rate, size, rotation and audio kept; no half-written output; the H.264 fallback; streaming;
running statistics against flicker, and the flicker ratio that measures it."""

from __future__ import annotations

import itertools
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

av = pytest.importorskip("av", reason="PyAV is needed for video")

from cyclestyle.cli import main  # noqa: E402
from cyclestyle.metrics.temporal import flicker_ratio  # noqa: E402
from cyclestyle.translate import video as video_module  # noqa: E402
from cyclestyle.translate.translator import Translator  # noqa: E402
from cyclestyle.translate.video import SceneCuts, VideoSettings, translate_video  # noqa: E402
from cyclestyle.videoio import VideoError, pick_encoder, read_frames  # noqa: E402
from scripts.synthetic import moving_frames, write_clip  # noqa: E402
from tests.helpers import REPO, tiny_config  # noqa: E402


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """A tiny unet_attn CycleGAN trained for 2 steps (about 2 s)."""
    from cyclestyle.train.trainer import Trainer
    from tests.helpers import write_images

    root = tmp_path_factory.mktemp("ckpt")
    dirs = write_images(root / "A", 3, seed=1), write_images(root / "B", 3, seed=2)
    Trainer(tiny_config(dirs, root / "run", "train.max_steps=2")).fit()
    return root / "run"


def translate(checkpoint: Path, inp: Path, out: Path, *extra: str) -> int:
    return main(["translate", "--checkpoint", str(checkpoint), "--input", str(inp), "--output",
                 str(out), "--device", "cpu", "--workers", "0", "--no-progress", *extra])


def probe(path: Path) -> dict:
    with av.open(str(path)) as container:
        video = container.streams.video[0]
        first = next(container.decode(video=0))
        audio = container.streams.audio
        return {"rate": video.average_rate, "size": (video.width, video.height),
                "rotation": first.rotation, "codec": video.codec_context.name,
                "audio": [(s.codec_context.name, s.sample_rate) for s in audio],
                "audio_packets": sum(1 for p in container.demux(audio) if p.size) if audio else 0}


def test_a_clip_keeps_its_frames_rate_size_rotation_and_audio(checkpoint, tmp_path, capsys):
    clip = write_clip(tmp_path / "clip.mp4", moving_frames(14, 64, 48), rate=24, rotation=90)
    out = tmp_path / "painted.mp4"  # --output named like a video: that file
    assert translate(checkpoint, clip, out) == 0
    assert "of which 1 video(s) (14 frames)" in capsys.readouterr().out
    source, result = probe(clip), probe(out)
    assert result["rate"] == source["rate"] == 24
    assert result["size"] == source["size"] == (64, 48)
    assert result["rotation"] == source["rotation"] == 90
    assert result["codec"] == "h264"
    assert result["audio"] == source["audio"] == [("aac", 16000)]
    assert result["audio_packets"] == source["audio_packets"] > 0  # copied packet for packet
    frames_in, frames_out = list(read_frames(clip)), list(read_frames(out))
    assert len(frames_out) == len(frames_in) == 14
    assert np.abs(frames_out[0].astype(int) - frames_in[0]).mean() > 5  # translated
    assert not list(tmp_path.glob(".*.tmp"))


def test_folders_hold_videos_next_to_images(checkpoint, tmp_path, capsys):
    from PIL import Image

    inp = tmp_path / "in"
    (inp / "sub").mkdir(parents=True)
    write_clip(inp / "sub/walk.mkv", moving_frames(5, 48, 32), audio=False)
    Image.fromarray(moving_frames(1, 40, 30)[0]).save(inp / "still.png")
    (inp / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42 not a video")
    assert translate(checkpoint, inp, tmp_path / "out", "--format", "jpg") == 1
    out = capsys.readouterr().out
    assert "translated 2 image(s), of which 1 video(s) (5 frames)" in out
    assert f"FAILED {inp / 'broken.mp4'}: cannot read video" in out
    assert (tmp_path / "out/still.jpg").is_file()  # --format applies to images ...
    assert len(list(read_frames(tmp_path / "out/sub/walk.mkv"))) == 5  # ... videos keep theirs
    assert translate(checkpoint, inp / "sub", tmp_path / "out/sub", "--skip-existing") == 0
    assert "skipped 1 existing" in capsys.readouterr().out


def test_h264_falls_back_to_mpeg4_when_the_build_lacks_it(checkpoint, tmp_path, monkeypatch):
    monkeypatch.setattr("cyclestyle.videoio.DEFAULT_ENCODERS", ("no-such-h264", "mpeg4"))
    assert pick_encoder(".mp4") == "mpeg4"
    clip = write_clip(tmp_path / "clip.mp4", moving_frames(6, 64, 48), audio=False)
    assert translate(checkpoint, clip, tmp_path / "out.mp4") == 0
    assert probe(tmp_path / "out.mp4")["codec"] == "mpeg4"
    assert len(list(read_frames(tmp_path / "out.mp4"))) == 6
    monkeypatch.setattr("cyclestyle.videoio.DEFAULT_ENCODERS", ("no-such-h264",))
    with pytest.raises(VideoError, match="none of the encoders no-such-h264 for .mp4"):
        pick_encoder(".mp4")


def test_frames_stream_through_a_bounded_queue():
    """Memory does not grow with the video's length: the decoder runs at most `depth` frames
    ahead of the consumer, however long the source."""
    produced = []

    def endless():
        for i in itertools.count():
            produced.append(i)
            yield i

    frames = video_module._prefetch(endless(), depth=4)
    lead = []
    for consumed, _ in enumerate(itertools.islice(frames, 50), start=1):
        time.sleep(0.002)  # let the producer run ahead as far as it can
        lead.append(len(produced) - consumed)
    frames.close()  # stops and joins the decoding thread
    assert max(lead) <= 4 + 2


def start_video_run(checkpoint: Path, tmp_path: Path, signum: int) -> tuple[Path, str, int]:
    """Translate a 240-frame clip in a subprocess and send `signum` once it is writing."""
    clip = write_clip(tmp_path / "long.mp4", moving_frames(240, 64, 48))
    out = tmp_path / "out.mp4"
    command = [sys.executable, "-m", "cyclestyle.cli", "translate", "--checkpoint",
               str(checkpoint), "--input", str(clip), "--output", str(out), "--device", "cpu",
               "--no-progress"]
    process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not list(tmp_path.glob(".out.mp4.*.tmp")):
        time.sleep(0.01)
    time.sleep(0.3)  # some frames in
    process.send_signal(signum)
    log, _ = process.communicate(timeout=120)
    return out, log, process.returncode


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGKILL])
def test_an_interrupted_video_run_leaves_no_output_or_a_complete_one(checkpoint, tmp_path,
                                                                     signum):
    out, log, code = start_video_run(checkpoint, tmp_path, signum)
    assert code != 0, log
    if out.exists():  # it finished before the signal: then it is whole
        assert len(list(read_frames(out))) == 240
    if signum == signal.SIGTERM:
        assert "interrupted: rerun the same command with --skip-existing" in log
        assert "Traceback" not in log and not list(tmp_path.glob(".*.tmp"))
    assert translate(checkpoint, tmp_path / "long.mp4", out, "--skip-existing") == 0
    assert len(list(read_frames(out))) == 240
    assert not list(tmp_path.glob(".*.tmp"))  # the killed run's temp file is cleaned up


# ---------------------------------------------------------------- temporal consistency


def test_the_flicker_ratio_on_hand_made_sequences():
    ramp = [np.full((4, 4, 3), 10 * t, np.uint8) for t in range(5)]  # changes 10 levels/frame
    assert flicker_ratio(ramp, ramp)["flicker_ratio"] == 1.0
    steady = [np.full((4, 4, 3), 7, np.uint8)] * 5
    assert flicker_ratio(ramp, steady)["flicker_ratio"] == 0.0
    double = [np.full((4, 4, 3), 20 * t, np.uint8) for t in range(5)]
    result = flicker_ratio(ramp, double)
    assert result["flicker_ratio"] == 2.0 and result["source_change_levels"] == 10.0
    with pytest.raises(ValueError, match="the translation ends after 4"):
        flicker_ratio(ramp, double[:4])


def test_evaluate_video_reports_the_flicker_ratio_of_each_pair(tmp_path, capsys):
    import json

    frames = moving_frames(6, 48, 32)
    for folder in ("src", "out"):
        (tmp_path / folder).mkdir()
    write_clip(tmp_path / "src/walk.mp4", frames, audio=False, options={"crf": "0"})
    write_clip(tmp_path / "out/walk.mkv", [f // 2 for f in frames], audio=False,
               options={"crf": "0"})  # half the contrast: about half the change per frame
    assert main(["evaluate", "--video", "--source", str(tmp_path / "src"), "--fake",
                 str(tmp_path / "out"), "--out", str(tmp_path / "eval")]) == 0
    (result,) = json.loads((tmp_path / "eval/metrics.json").read_text())["videos"]
    assert result["frames"] == 6 and 0.4 < result["flicker_ratio"] < 0.6
    assert "mean flicker ratio" in capsys.readouterr().out
    assert main(["evaluate", "--fake", str(tmp_path / "out"), "--out", str(tmp_path / "e")]) == 2
    assert main(["evaluate", "--video", "--real", "x", "--fake", str(tmp_path / "out"),
                 "--source", str(tmp_path / "src"), "--out", str(tmp_path / "e")]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err[0].endswith("--real: None is invalid: missing; a folder of real target-domain "
                           "images (or --video to score videos) (-v for the traceback)")
    assert "--real: 'x' is invalid: given with --video" in err[1]


def test_scene_cuts_are_flagged_at_the_first_frame_and_at_a_change_of_shot():
    shot_a, shot_b = moving_frames(3, 64, 48, seed=0), moving_frames(2, 64, 48, seed=5)
    frames = torch.from_numpy(np.stack(shot_a + shot_b)).permute(0, 3, 1, 2)
    assert SceneCuts().starts(frames) == [True, False, False, True, False]


def blinking_clip(path: Path, frames: int = 10) -> tuple[Path, np.ndarray]:
    """A still picture with a lamp (a quarter of the frame) switching on and off: what
    per-frame statistics turn into flicker of the whole frame. Returns the clip and the mask
    of the pixels well away from the lamp."""
    still = moving_frames(1, 64, 48)[0]
    clip = []
    for t in range(frames):
        frame = still.copy()
        frame[4:20, 4:28] = 250 if t % 2 else 10
        clip.append(frame)
    background = np.ones((48, 64), bool)
    background[:28, :36] = False
    return write_clip(path, clip, audio=False), background


def test_running_statistics_keep_the_background_of_a_blinking_lamp_steady(checkpoint, tmp_path):
    clip, background = blinking_clip(tmp_path / "lamp.mp4")
    translator = Translator.from_checkpoint(checkpoint, device="cpu", precision="fp32")
    change = {}
    for stats in ("frame", "running"):
        out = tmp_path / f"{stats}.mp4"
        translate_video(translator, clip, out, VideoSettings(stats, window=8), progress=False)
        frames = [f.astype(int) for f in read_frames(out)]
        change[stats] = np.mean([np.abs(b - a)[background].mean()
                                 for a, b in zip(frames, frames[1:])])
    assert change["running"] < 0.7 * change["frame"], change


def test_two_generator_streams_write_the_same_video_as_one(checkpoint, tmp_path, monkeypatch):
    """On a 2-core CPU, batches run on two threads, one layer apart with running statistics:
    the frames must be those of one stream."""
    clip, _ = blinking_clip(tmp_path / "lamp.mp4", frames=8)
    translator = Translator.from_checkpoint(checkpoint, device="cpu", precision="fp32")
    outputs = {}
    for streams in (1, 2):
        monkeypatch.setattr(video_module, "default_video_streams", lambda device, n=streams: n)
        out = tmp_path / f"streams{streams}.mp4"
        translate_video(translator, clip, out, VideoSettings("running", window=4),
                        progress=False)
        outputs[streams] = np.stack(list(read_frames(out)))
    assert np.array_equal(outputs[1], outputs[2])


@pytest.mark.slow
def test_video_benchmark_quick_run_reports_flicker_and_speed(tmp_path):
    """scripts/bench_video.py --flicker --speed --quick (64p clips; ~15 s on 2 idle cores)."""
    from tests.helpers import run_benchmark

    report = run_benchmark("bench_video.py", tmp_path / "bench.json", "--flicker", "--speed",
                           "--quick")
    assert report["host"]["cpu_capability"]
    assert [row["clip"] for row in report["flicker"]] == ["static", "pan", "lamp"]
    for row in report["flicker"]:
        assert row["improvement"] == round(row["flicker_ratio_frame"]
                                           / row["flicker_ratio_running"], 2)
        assert 0 < row["ssim_running_to_frame"] <= 1
        assert row["statistics_only_change_running"] >= 0
    (speed,) = report["speed"]
    assert speed["ours_fps"] > 0 and speed["naive_fps"] > 0
    assert speed["speedup"] == round(speed["ours_fps"] / speed["naive_fps"], 2)
