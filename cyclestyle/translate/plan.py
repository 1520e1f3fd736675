"""Planning a translate run: which files, where each output goes, and the safety checks that
run before any work (cyclestyle/translate/runner.py runs the plan).

Outputs never land inside the input tree unless asked (the folder given, a file's folder, every
listed file's folder), no output path may equal an input path, two inputs may not share an
output, and the temp files an interrupted run left are found by the atomic module's one naming
rule. Images take --format; videos keep their container. One video with an output named like a
video is written to exactly that file.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from cyclestyle.atomic import temp_target
from cyclestyle.imageio import IMAGE_EXTENSIONS, find_images
from cyclestyle.options import invalid
from cyclestyle.translate.options import OUTPUT_FORMATS
from cyclestyle.videoio import VIDEO_EXTENSIONS, is_video

FORMATS = OUTPUT_FORMATS
LIST_SNIFF_BYTES = 65536  # a list file's first bytes are checked for NUL before reading it all


@dataclass(frozen=True)
class Job:
    source: Path
    target: Path



def list_inputs(input_path: str | os.PathLike, unreadable: list[Path] | None = None,
                ) -> tuple[list[Path], Path, list[Path]]:
    """(files, root the outputs mirror, the input folders outputs must stay out of).

    `input_path` is an image or a video, a folder (searched recursively for both; sub-folders
    that cannot be listed are appended to `unreadable`) or a UTF-8 text file with one path per
    line (blank lines and lines starting with '#' ignored; relative paths are relative to the
    list file's folder).
    The input folders: the folder itself, an image's folder, or every listed image's folder.
    """
    path = Path(input_path).expanduser()
    if path.is_dir():
        found = find_images(path, unreadable, IMAGE_EXTENSIONS + VIDEO_EXTENSIONS)
        return found, path, [path.resolve()]
    if not path.exists():
        raise FileNotFoundError(f"input {path} does not exist")
    valid = (f"give an image ({', '.join(IMAGE_EXTENSIONS)}), a video "
             f"({', '.join(VIDEO_EXTENSIONS)}), a folder, or a UTF-8 text file listing one "
             "path per line")
    if not path.is_file():
        raise invalid("--input", str(path), "not a file or folder (a pipe or a device?)", valid)
    suffix = path.suffix.lower()
    if suffix in IMAGE_EXTENSIONS + VIDEO_EXTENSIONS:
        return [path], path.parent, [path.parent.resolve()]
    if suffix in Image.registered_extensions():  # an image format translate does not read
        raise invalid("--input", str(path), f"a {suffix} image, which translate does not read",
                      valid)
    files = [Path(s) if Path(s).is_absolute() else path.parent / s
             for s in (line.strip() for line in _read_list(path, valid))
             if s and not s.startswith("#")]
    if not files:
        raise ValueError(f"list file {path} names no images (one path per line expected)")
    root = Path(os.path.commonpath([f.parent.resolve() for f in files]))
    return files, root, sorted({f.parent.resolve() for f in files})


def _read_list(path: Path, valid: str) -> list[str]:
    """The lines of a list file; binary content or other encodings are one-line errors."""
    with path.open("rb") as f:
        data = f.read(LIST_SNIFF_BYTES)
        if b"\0" not in data:
            data += f.read()
    if b"\0" in data:
        raise invalid("--input", str(path), "binary content: neither a supported image nor a "
                      "text list file", valid)
    try:
        return data.decode("utf-8-sig").splitlines()
    except UnicodeDecodeError as err:
        raise invalid("--input", str(path), f"not UTF-8 text (byte {data[err.start]:#04x} at "
                      f"offset {err.start}), so not a list file", valid) from None


def output_name(relative: Path, fmt: str) -> Path:
    """The output's path for an input at `relative`: videos keep their container, images take
    `fmt` (same: their own)."""
    if fmt not in FORMATS:
        raise ValueError(f"format={fmt!r}; choose one of {', '.join(FORMATS)}")
    return relative if fmt == "same" or is_video(relative) else relative.with_suffix("." + fmt)


def plan_jobs(input_path: str | os.PathLike, output_dir: str | os.PathLike, fmt: str = "same",
              allow_inside_input: bool = False,
              unreadable: list[Path] | None = None) -> list[Job]:
    """One Job per input image or video, with the safety checks; raises ValueError before any
    work.

    No output may land in an input folder (the folder given, a file's folder, any listed
    file's folder) unless `allow_inside_input`, and none may replace an input, ever. One video
    with an output named like a video (`--input clip.mp4 --output out.mp4`) is written to that
    file, wherever it is. Sub-folders of a folder input that cannot be listed are appended to
    `unreadable`.
    """
    if is_video(input_path) and is_video(output_dir) and Path(input_path).is_file():
        jobs = [Job(Path(input_path), Path(output_dir).expanduser().resolve())]
        _check_no_overwrite(jobs)
        return jobs
    files, root, input_dirs = list_inputs(input_path, unreadable)
    is_folder = Path(input_path).expanduser().is_dir()
    out = Path(output_dir).expanduser().resolve()
    if is_folder and allow_inside_input and out != input_dirs[0] and out.is_relative_to(
            input_dirs[0]):  # a sub-folder of the input: its files are earlier outputs
        files = [f for f in files if not f.resolve().is_relative_to(out)]
    jobs = [Job(f, out / output_name(_relative(f, root), fmt)) for f in files]
    if not allow_inside_input:
        _check_outside_inputs(jobs, input_dirs, out, None if is_folder else files)
    _check_no_overwrite(jobs)
    return jobs


def _check_outside_inputs(jobs: list[Job], input_dirs: list[Path], out: Path,
                          files: list[Path] | None) -> None:
    """Refuse the first output whose folder is, or lies under, an input folder."""
    dirs, checked = set(input_dirs), set()
    for job in jobs:
        if job.target.parent in checked:  # many outputs share a folder
            continue
        checked.add(job.target.parent)
        folder = job.target.parent.resolve()
        inside = next((d for d in (folder, *folder.parents) if d in dirs), None)
        if inside is None:
            continue
        whose = "" if files is None else " (the folder of input " + str(
            next(f for f in files if f.parent.resolve() == inside)) + ")"
        raise invalid("--output", str(out), f"it would write {job.target} inside the input "
                      f"folder {inside}{whose}", "choose a folder outside the input tree, or "
                      "pass --allow-inside-input (inputs are never replaced)")


def _relative(path: Path, root: Path) -> Path:
    try:
        return path.resolve().relative_to(root.resolve())
    except ValueError:
        return Path(path.name)


def _check_no_overwrite(jobs: list[Job]) -> None:
    sources = {job.source.resolve() for job in jobs}
    targets: dict[Path, Path] = {}
    for job in jobs:
        # Folder links resolved, not the file's own: a rename replaces a link, not its target.
        if job.target.parent.resolve() / job.target.name in sources:
            raise ValueError(f"output {job.target} would overwrite an input image; choose "
                             "another output folder or --format")
        if job.target in targets:
            raise ValueError(f"inputs {targets[job.target]} and {job.source} would both be "
                             f"written to {job.target}; use --format same or rename one")
        targets[job.target] = job.source


def clean_stale_temp_files(jobs: list[Job]) -> int:
    """Remove `.NAME.*.tmp` files an interrupted run left beside these jobs' outputs."""
    names_by_dir: dict[Path, set[str]] = {}
    for job in jobs:
        names_by_dir.setdefault(job.target.parent, set()).add(job.target.name)
    removed = 0
    for folder, names in names_by_dir.items():
        if not folder.is_dir():
            continue
        for entry in os.scandir(folder):
            if temp_target(entry.name) in names and entry.is_file():
                Path(entry.path).unlink(missing_ok=True)
                removed += 1
    return removed
