"""The package layout the design promises: capabilities in their own packages, no import
circles, capabilities never reaching into training, and a command line that answers `--help`
without importing torch."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "cyclestyle"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> set[str]:
    """cyclestyle modules that `path` imports anywhere (functions too), except under
    `if TYPE_CHECKING:`; `from pkg import name` counts `pkg.name` when that is a module."""
    tree = ast.parse(path.read_text())
    skipped = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If)
               and getattr(node.test, "id", "") == "TYPE_CHECKING" for n in ast.walk(node)}
    found = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found |= {f"{node.module}.{a.name}" for a in node.names}
    return {name for name in found if name.split(".")[0] == "cyclestyle"}


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    modules = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    return {name: {m for m in imports_of(path) if m in modules and m != name}
            for name, path in modules.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done

    def visit(node: str, path: list[str]) -> list[str] | None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt] if nxt in path else [node, nxt]
            if nxt not in state and (cycle := visit(nxt, [*path, nxt])):
                return cycle
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (cycle := visit(start, [start])):
            return cycle
    return None


def test_capabilities_are_packages():
    for name in ("train", "translate", "gatys", "metrics", "models"):
        assert (PACKAGE / name / "__init__.py").is_file(), name


def test_no_module_imports_another_in_a_circle(graph):
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph))


def test_the_cycle_finder_finds_a_planted_circle(graph):
    planted = {k: set(v) for k, v in graph.items()}
    planted["cyclestyle.options"].add("cyclestyle.checkpoint")  # checkpoint imports options
    assert find_cycle(planted) is not None


@pytest.mark.parametrize("capability", ["translate", "gatys", "metrics", "models"])
def test_capabilities_import_nothing_from_train(graph, capability):
    prefix = f"cyclestyle.{capability}"
    offenders = {(m, t) for m, targets in graph.items() if m.startswith(prefix)
                 for t in targets if t.startswith("cyclestyle.train")}
    assert not offenders, offenders


def test_core_modules_import_no_capability(graph):
    core = ("cyclestyle.atomic", "cyclestyle.imageio", "cyclestyle.videoio", "cyclestyle.options",
            "cyclestyle.runtime", "cyclestyle.checkpoint", "cyclestyle.cli")
    capabilities = ("cyclestyle.train", "cyclestyle.translate", "cyclestyle.gatys",
                    "cyclestyle.metrics")
    offenders = {(m, t) for m in core for t in graph[m] if t.startswith(capabilities)}
    assert not offenders, offenders


def test_tensor_pixel_conversion_is_written_only_in_imageio():
    """[-1, 1] <-> 0..255 is x * 127.5 + 127.5 and its inverse: only imageio may spell it."""
    offenders = [str(p) for p in PACKAGE.rglob("*.py")
                 if p.name != "imageio.py" and "127.5" in p.read_text()]
    assert not offenders, f"use imageio.to_uint8/from_uint8 in {offenders}"


HELP_PROBE = """
import sys
from cyclestyle.cli import main
try:
    main(sys.argv[1:])
except SystemExit:
    pass
heavy = sorted(m for m in ("torch", "torchvision", "torchmetrics", "accelerate") if m in sys.modules)
print("HEAVY:" + ",".join(heavy))
"""


@pytest.mark.parametrize("argv", [["--help"], ["--version"], ["train", "--help"],
                                  ["demo", "--help"], ["translate", "--help"],
                                  ["export", "--help"], ["gatys", "--help"],
                                  ["evaluate", "--help"], ["models", "--help"],
                                  ["push", "--help"], ["pretrained", "download", "--help"]])
def test_help_and_version_import_no_torch(argv):
    out = subprocess.run([sys.executable, "-c", HELP_PROBE, *argv], capture_output=True,
                         text=True, timeout=120, check=True).stdout
    assert "usage:" in out or "cyclestyle" in out
    assert out.strip().endswith("HEAVY:"), out[-300:]


@pytest.mark.parametrize("argv", [["traine"], ["train", "--bogus"], ["translate"],
                                  ["gatys", "--content", "a", "--style", "b", "--output", "c",
                                   "--scales", ","]])
def test_usage_errors_are_one_line_with_exit_2(argv, capsys):
    from cyclestyle.cli import main

    with pytest.raises(SystemExit) as stop:
        main(argv)
    err = capsys.readouterr().err
    assert stop.value.code == 2 and err.count("\n") == 1 and "error:" in err, err
