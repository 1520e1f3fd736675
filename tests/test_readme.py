"""The README's commands are the ones that work: set-up, CI, CLI help and the train example."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from cyclestyle.checkpoint import load_checkpoint
from cyclestyle.cli import main

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text()


def code_blocks() -> list[list[str]]:
    blocks = re.findall(r"```bash\n(.*?)```", README, flags=re.S)
    return [[line for line in b.replace("\\\n", " ").splitlines() if line.strip()
             and not line.lstrip().startswith("#")] for b in blocks]


def test_readme_starts_with_exactly_two_setup_commands():
    first = code_blocks()[0]
    assert len(first) == 2
    demo, tests = first
    assert demo.startswith("bash scripts/setup.sh && ") and demo.endswith("cyclestyle demo")
    assert tests.startswith("bash scripts/setup.sh && ") and "pytest" in tests


def test_ci_runs_the_readme_test_command():
    ci_lines = (REPO / ".ci" / "run").read_text().splitlines()
    assert code_blocks()[0][1] in ci_lines


@pytest.mark.parametrize("argv", [["--help"], ["train", "--help"], ["demo", "--help"]])
def test_help_explains(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    assert "usage: cyclestyle" in text and len(text) > 300


def test_models_lists_registered_networks(capsys):
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert "unet_attn(" in out and "resnet(" in out and "patchgan(" in out


def test_readme_train_example_runs(image_dirs, tmp_path, monkeypatch):
    command = next(line for block in code_blocks() for line in block
                   if line.startswith(".venv/bin/cyclestyle train"))
    argv = shlex.split(command)[1:]
    argv = [a.replace("path/to/photos", str(image_dirs[0])).replace("path/to/paintings", str(image_dirs[1]))
            .replace("runs/p2p", str(tmp_path / "p2p")) for a in argv]
    argv += ["--set", "train.max_steps=2", "--set", "train.progress=false"]
    monkeypatch.chdir(REPO)
    assert main(argv) == 0
    assert load_checkpoint(tmp_path / "p2p")["step"] == 2
