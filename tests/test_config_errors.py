"""`cyclestyle train` with a mistake in it: exit code 2, one message naming the key (or file)
and what would be valid, no traceback, and nothing heavy done first (no networks built, no
images decoded).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import cyclestyle.train.trainer
from cyclestyle.cli import main
from tests.helpers import TINY as TINY_PATH

REPO = Path(__file__).resolve().parents[1]
TINY = str(TINY_PATH)  # for command lines

# (extra arguments, expected message). {a} {b}: good image folders; {tmp}: a scratch folder with
# {tmp}/empty (a folder without images) and {tmp}/corrupt.pt (a truncated checkpoint).
CASES = {
    "negative image size": (["--set", "data.image_size=-4"],
                            r"data\.image_size: -4 is invalid: out of range; expected an integer >= 8"),
    "load size below crop": (["--set", "data.load_size=16"],
                             r"data\.load_size: 16 is invalid: out of range; expected 0 \(automatic\) or >= "
                             r"data\.image_size \(32\)"),
    "image size too small for the discriminator": (
        ["--set", "data.image_size=16", "--set", "model.discriminator_args.n_layers=3"],
        r"data\.image_size: 16 is too small for model\.discriminator 'patchgan'.*"
        r"expected an integer >= 24"),
    "image size too small for a multi-scale discriminator": (
        ["--set", "data.image_size=32", "--set", "model.discriminator_args.n_layers=3", "--set",
         "model.discriminator_args.num_scales=2"],
        r"data\.image_size: 32 is too small.*num_scales=2.*expected an integer >= 47"),
    "negative bomb limit": (["--set", "data.max_image_pixels=-1"],
                            r"data\.max_image_pixels: -1 is invalid: .*; expected an integer >= 0"),
    "zero batch": (["--set", "train.batch_size=0"],
                   r"train\.batch_size: 0 is invalid: out of range; expected an integer >= 1"),
    "zero steps": (["--set", "train.max_steps=0"], r"train\.max_steps: 0 is invalid"),
    "negative learning rate": (["--set", "train.lr=-0.1"],
                               r"train\.lr: -0\.1 is invalid: out of range; expected a positive finite float"),
    "betas out of range": (["--set", "train.betas=[0.5, 1.5]"],
                           r"train\.betas: .*two floats in \[0, 1\)"),
    "unknown precision": (["--set", "train.precision=fp8"],
                          r"train\.precision: 'fp8' is invalid: not a known precision; expected "
                          r"auto / fp32 / bf16 / fp16"),
    "infinite learning rate": (["--set", "train.lr=inf"], r"train\.lr: inf is invalid"),
    "infinite decay start": (["--set", "train.decay_start=inf"],
                             r"train\.decay_start: inf is invalid"),
    "negative seed": (["--set", "train.seed=-5"],
                      r"train\.seed: -5 is invalid: out of range; expected an integer >= 0"),
    "--set value that is not YAML": (["--set", "train.lr=[1,"],
                                     r"--set train\.lr: '\[1,' is invalid: not valid YAML"),
    "--set value that is a YAML tag": (["--set", "train.lr=@x"],
                                       r"--set train\.lr: '@x' is invalid: not valid YAML"),
    "unknown generator": (["--set", "model.generator=unet"],
                          r"model\.generator: 'unet' is invalid: not a registered generator; valid: .*unet_attn"),
    "unknown discriminator": (["--set", "model.discriminator=stylegan"],
                              r"model\.discriminator: 'stylegan' is invalid: not a registered discriminator; valid: "
                              r".*patchgan"),
    "unknown generator argument": (["--set", "model.generator_args.widht=3"],
                                   r"model\.generator_args: widht is invalid: not accepted by 'unet_attn'; "
                                   r"valid: .*base_channels"),
    "bad generator argument value": (["--set", "model.generator_args.num_res_blocks=0"],
                                     r"model\.generator_args: num_res_blocks=0 .*>= 1"),
    "bad discriminator argument value": (["--set", "model.discriminator_args.norm=weird"],
                                         r"model\.discriminator_args: .*norm.*instance"),
    "unknown loss": (["--set", "loss.gan_mode=wgan"], r"gan_mode.*lsgan"),
    "unknown key": (["--set", "train.max_step=3"],
                    r"unknown key\(s\) train\.max_step at train; valid keys: .*train\.max_steps"),
    "unknown section": (["--set", "trian.max_steps=3"], r"unknown key\(s\) trian"),
    "wrong type": (["--set", "train.max_steps=ten"],
                   r"train\.max_steps: 'ten' is invalid: not an integer; expected an integer"),
    "wrong type bool": (["--set", "data.flip=maybe"], r"data\.flip: 'maybe' is invalid: not a boolean; expected true or false"),
    "section given a value": (["--set", "data=3"], r"data: 3 is invalid: a int; expected a mapping"),
    "empty output dir": (["--set", "output_dir="], r"output_dir: '' is invalid"),
    "eval without held-out folders": (["--set", "eval.every=5"],
                                      r"eval\.domain_a: required when eval\.every > 0"),
    "missing domain folder": (["--set", "data.domain_a={tmp}/nowhere"],
                              r"data\.domain_a: folder .*nowhere does not exist"),
    "domain not set": (["--set", "data.domain_b="],
                       r"data\.domain_b is not set; give both data\.domain_a and data\.domain_b"),
    "empty domain folder": (["--set", "data.domain_b={tmp}/empty"],
                            r"data\.domain_b: no images found in .*empty \(searched recursively"),
    "root and domains": (["--set", "data.root={tmp}"], r"set either data\.root .* not both"),
    "root without trainA": (["--set", "data.domain_a=", "--set", "data.domain_b=", "--set",
                             "data.root={tmp}/empty"],
                            r"data\.root: expected .*trainA .*does not exist"),
    "resume from a corrupt file": (["--resume", "{tmp}/corrupt.pt"],
                                   r"corrupt\.pt is damaged and cannot be read .*a truncated "
                                   r"file usually means an interrupted copy"),
    "resume when every checkpoint is corrupt": (
        ["--resume", "--set", "output_dir={tmp}/broken_run"],
        r"--resume: no checkpoint in .*broken_run/checkpoints can be loaded "
        r"\(step_00000002\.pt; see the warnings above\)"),
    "resume from a missing file": (["--resume", "{tmp}/missing.pt"],
                                   r"checkpoint not found: .*missing\.pt"),
    "bad --set syntax": (["--set", "nonsense"], r"--set: 'nonsense' is invalid: not of the form key=value"),
    "--set without a key": (["--set", "=3"], r"--set: '=3' is invalid: not of the form key=value"),
    "--set into a value": (["--set", "data.image_size.x=1"],
                           r"--set: 'data.image_size.x=1' is invalid: 'image_size' is not a section"),
}

CONFIG_FILE_CASES = {  # (config file content or None for a missing file, expected message)
    "missing config file": (None, r"config file not found: .*nope\.yaml"),
    "invalid YAML": ("train: [unclosed\n", r"nope\.yaml: not valid YAML"),
    "YAML that is not a mapping": ("- a\n- b\n", r"nope\.yaml: expected a mapping of sections"),
    "config that is a folder": ("FOLDER", r"config: '.*nope\.yaml' is invalid: a folder, not a file"),
    "unreadable config": ("UNREADABLE", r"config: '.*nope\.yaml' is invalid: cannot be read"),
}


@pytest.fixture
def no_heavy_work(monkeypatch):
    """Fail the test if training gets as far as building networks or a dataset."""
    def forbidden(*args, **kwargs):
        raise AssertionError("heavy work started before the mistake was reported")

    monkeypatch.setattr(cyclestyle.train.trainer, "build_networks", forbidden)
    monkeypatch.setattr(cyclestyle.train.trainer, "UnpairedDataset", forbidden)
    monkeypatch.delenv("CYCLESTYLE_DEBUG", raising=False)


@pytest.fixture
def scratch(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no images here")
    (tmp_path / "corrupt.pt").write_bytes(b"PK\x03\x04" + b"\0" * 60)
    broken = tmp_path / "broken_run" / "checkpoints" / "step_00000002.pt"
    broken.parent.mkdir(parents=True)
    broken.write_bytes(b"PK\x03\x04 half a checkpoint")
    return tmp_path


def run_train(argv: list[str], capsys) -> tuple[int, str]:
    code = main(argv)
    captured = capsys.readouterr()
    return code, captured.err


@pytest.mark.parametrize(("extra", "message"), list(CASES.values()), ids=list(CASES))
def test_train_mistake_is_named_before_any_work(extra, message, image_dirs, scratch, capsys,
                                                no_heavy_work):
    fill = {"a": image_dirs[0], "b": image_dirs[1], "tmp": scratch}
    argv = ["train", TINY, "--set", f"data.domain_a={image_dirs[0]}", "--set",
            f"data.domain_b={image_dirs[1]}", "--set", f"output_dir={scratch / 'run'}",
            "--set", "train.progress=false", *[arg.format(**fill) for arg in extra]]
    code, err = run_train(argv, capsys)
    assert code == 2, err
    assert err.startswith("cyclestyle train: error: ") and "Traceback" not in err
    assert err.count("\n") == 1, err  # one line
    assert re.search(message, err), err


@pytest.mark.parametrize(("content", "message"), list(CONFIG_FILE_CASES.values()),
                         ids=list(CONFIG_FILE_CASES))
def test_config_file_mistake_is_named(content, message, image_dirs, tmp_path, capsys,
                                      no_heavy_work):
    path = tmp_path / "nope.yaml"
    if content == "FOLDER":
        path.mkdir()
    elif content == "UNREADABLE":
        path.write_bytes(b"train: {max_steps: \xff\xfe}\n")  # not UTF-8 (root reads any mode)
    elif content is not None:
        path.write_text(content)
    code, err = run_train(["train", str(path), "--set", f"data.domain_a={image_dirs[0]}"], capsys)
    assert code == 2 and "Traceback" not in err and err.count("\n") == 1, err
    assert re.search(message, err), err


def test_the_base_command_line_passes_every_check(image_dirs, tmp_path, capsys, monkeypatch):
    """The control: without the mistake, the same command gets as far as training."""
    started = []
    monkeypatch.setattr(cyclestyle.train.trainer, "train", lambda config, resume: started.append(config))
    argv = ["train", TINY, "--set", f"data.domain_a={image_dirs[0]}", "--set",
            f"data.domain_b={image_dirs[1]}", "--set", f"output_dir={tmp_path / 'run'}"]
    assert main(argv) == 0, capsys.readouterr().err
    assert started and started[0].data.image_size == 32
