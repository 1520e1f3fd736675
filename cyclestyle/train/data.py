"""Unpaired two-domain data with an exactly reproducible, resumable sample stream.

Sample k of the training stream is a pure function of (seed, k): which A file, which B file,
the crop and the flip. Nothing depends on worker count, on worker state, or on where the run
started, so N steps in one run equal N/2 steps + resume + N/2 steps, and ranks of a
multi-process run read disjoint parts of one stream (see `StepSampler`).
"""

from __future__ import annotations

import hashlib
import operator
import os
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path

import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset, Sampler, default_collate

from cyclestyle.imageio import (
    IMAGE_EXTENSIONS,
    LOAD_TO_CROP_RATIO,
    ImageLoadError,
    find_images,
    load_image,
    pil_to_tensor,
    tensor_to_pil,
)
from cyclestyle.train.config import (  # one list each, validated with the config
    PREPROCESS_MODES,
    UNCROPPED_MODES,
)
from cyclestyle.train.preprocess import crop_to_common_size, preprocess_image

__all__ = [
    "IMAGE_EXTENSIONS",
    "ImageLoadError",
    "StepSampler",
    "UnpairedDataset",
    "build_dataloader",
    "crop_to_common_size",
    "find_domain_images",
    "find_images",
    "load_image",
    "pil_to_tensor",
    "preprocess_image",
    "resolve_domain_dirs",
    "stable_seed",
    "tensor_to_pil",
]



def stable_seed(*parts: int | str) -> int:
    """A 63-bit seed from ints and strings, identical across processes and Python runs.

    Python's hash() of a str is salted per process, so it cannot be used here.
    """
    digest = hashlib.blake2b(repr(parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


class UnpairedDataset(Dataset):
    """An infinite stream of unpaired (A, B) crops; item k is a pure function of (seed, k).

    Domain A walks a fresh permutation of its files every len(A) samples (epoch k // len(A),
    seeded from (seed, "a", epoch)); domain B walks its own, independent permutations, so which
    B image meets which A image changes every epoch. Each image is prepared by
    `preprocess_image` (by default: resized so its short side is `load_size`, randomly cropped
    to `image_size`) and randomly flipped, using a generator seeded from (seed, k). In the
    uncropped modes (scale_width, none) the A and B images of one item are then cut to their
    common size, so that they can share a batch inside the objective.

    `max_pixels` is the decompression-bomb limit per image (0 = none; None = the process-wide
    one, see `imageio.set_max_image_pixels`).

    With `skip_bad_images`, an unreadable file is warned about once (per process) and replaced
    by the next file of the same permutation; the item's "skipped" field counts the bad files
    passed over for that item (each time one is drawn), so summing it over a run is the same
    whatever the number of workers.

    `len()` is one epoch of the larger domain, for progress reports; any index >= 0 is valid.
    """

    def __init__(
        self,
        files_a: Sequence[str | os.PathLike],
        files_b: Sequence[str | os.PathLike],
        image_size: int,
        load_size: int | None = None,
        flip: bool = True,
        seed: int = 0,
        skip_bad_images: bool = False,
        max_pixels: int | None = None,
        preprocess: str = "resize_and_crop",
    ):
        self.files = {"a": [Path(f) for f in files_a], "b": [Path(f) for f in files_b]}
        for domain, files in self.files.items():
            if not files:
                raise ValueError(f"files_{domain} is empty; domain {domain.upper()} needs images")
        if image_size < 1:
            raise ValueError(f"image_size must be a positive number of pixels, got {image_size}")
        if load_size is None:
            load_size = round(image_size * LOAD_TO_CROP_RATIO)
        if load_size < image_size:
            raise ValueError(f"load_size ({load_size}) must be >= image_size ({image_size})")
        if preprocess not in PREPROCESS_MODES:
            raise ValueError(f"preprocess: {preprocess!r} is invalid: not a known mode; "
                             f"expected {' / '.join(PREPROCESS_MODES)}")
        self.image_size = image_size
        self.load_size = load_size
        self.preprocess = preprocess
        self.flip = flip
        self.seed = operator.index(seed)
        self.skip_bad_images = skip_bad_images
        self.max_pixels = max_pixels
        self._bad: dict[Path, str] = {}  # path -> reason, per process
        self._permutations: dict[tuple[str, int], list[int]] = {}

    def __len__(self) -> int:
        return max(len(self.files["a"]), len(self.files["b"]))

    def __getitem__(self, index: int) -> dict:
        k = operator.index(index)
        if k < 0:
            raise IndexError(f"stream index must be >= 0, got {k}")
        generator = torch.Generator().manual_seed(stable_seed(self.seed, "augment", k))
        draws = torch.rand(6, generator=generator).tolist()  # (crop y, crop x, flip) per domain
        img_a, path_a, skipped_a = self._load(k, "a")
        img_b, path_b, skipped_b = self._load(k, "b")
        a, b = self._transform(img_a, *draws[:3]), self._transform(img_b, *draws[3:])
        if self.preprocess in UNCROPPED_MODES:
            # The objective batches A- and B-side tensors together (identity and VGG terms), so
            # a step's two images share one size: each is cut to the smaller height and width,
            # at the crop draws these modes leave unused.
            a = crop_to_common_size([a, b], *draws[:2])[0]
            b = crop_to_common_size([b, a], *draws[3:5])[0]
        return {
            "a": a,
            "b": b,
            "path_a": str(path_a),
            "path_b": str(path_b),
            "skipped": skipped_a + skipped_b,
        }

    def _permutation(self, domain: str, epoch: int) -> list[int]:
        key = (domain, epoch)
        if key not in self._permutations:
            if len(self._permutations) >= 8:  # workers touch a few epochs at a time
                self._permutations.pop(next(iter(self._permutations)))
            generator = torch.Generator().manual_seed(stable_seed(self.seed, domain, epoch))
            n = len(self.files[domain])
            self._permutations[key] = torch.randperm(n, generator=generator).tolist()
        return self._permutations[key]

    def _load(self, k: int, domain: str) -> tuple[Image.Image, Path, int]:
        """The image at stream position k of `domain`, the path, and how many bad files were skipped."""
        files = self.files[domain]
        epoch, position = divmod(k, len(files))
        permutation = self._permutation(domain, epoch)
        for skipped in range(len(files)):
            path = files[permutation[(position + skipped) % len(files)]]
            if path in self._bad:
                continue
            try:
                return load_image(path, max_pixels=self.max_pixels), path, skipped
            except ImageLoadError as exc:
                if not self.skip_bad_images:
                    raise ImageLoadError(f"{exc}. Set data.skip_bad_images=true to skip "
                                         "unreadable files (each is warned about and counted)",
                                         path=exc.path, reason=exc.reason) from exc
                self._bad[path] = exc.reason
                warnings.warn(f"skipping unreadable image {path}: {exc.reason}", stacklevel=2)
        example = files[permutation[position]]
        raise ValueError(
            f"all {len(files)} files of domain {domain.upper()} are unreadable "
            f"(for example {example}: {self._bad[example]})"
        )

    def _transform(self, img: Image.Image, u_y: float, u_x: float, u_flip: float) -> torch.Tensor:
        """`preprocess_image` with crop position (u_y, u_x) in [0, 1), flipped if u_flip < 0.5."""
        img = preprocess_image(img, self.preprocess, self.load_size, self.image_size, u_y, u_x)
        tensor = pil_to_tensor(img)  # (3, H, W); H = W = image_size unless scale_width/none
        if self.flip and u_flip < 0.5:
            tensor = tensor.flip(-1)
        return tensor


class StepSampler(Sampler[int]):
    """Stream indices for one process, forever: step s yields (s*world_size + rank)*batch_size + i.

    Ranks read disjoint slices of the same stream, and starting at `start_step` continues it
    exactly where a run that stopped before that step left off.
    """

    def __init__(self, start_step: int, batch_size: int, rank: int = 0, world_size: int = 1):
        if start_step < 0:
            raise ValueError(f"start_step must be >= 0, got {start_step}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must be in [0, world_size={world_size}), got {rank}")
        self.start_step = start_step
        self.batch_size = batch_size
        self.rank = rank
        self.world_size = world_size

    def __iter__(self) -> Iterator[int]:
        step = self.start_step
        while True:
            first = (step * self.world_size + self.rank) * self.batch_size
            yield from range(first, first + self.batch_size)
            step += 1


def resolve_domain_dirs(
    domain_a: str, domain_b: str, root: str = "", split: str = "train"
) -> tuple[Path, Path]:
    """The two image folders: explicit `domain_a`/`domain_b`, or root/{split}A and root/{split}B.

    The second form is the CycleGAN dataset layout (trainA, trainB, testA, testB).
    """
    if root and (domain_a or domain_b):
        raise ValueError(
            "set either data.root (a CycleGAN-style folder) or data.domain_a and data.domain_b "
            f"(two image folders), not both; got root={root!r}, domain_a={domain_a!r}, "
            f"domain_b={domain_b!r}"
        )
    if root:
        root_path = Path(root).expanduser()
        if not root_path.is_dir():
            raise FileNotFoundError(f"data.root: folder {root_path} does not exist")
        dirs = (root_path / f"{split}A", root_path / f"{split}B")
        for folder in dirs:
            if not folder.is_dir():
                raise FileNotFoundError(
                    f"data.root: expected {folder} (CycleGAN layout: {split}A/ and {split}B/ "
                    f"inside {root_path}) but it does not exist"
                )
        return dirs
    if not domain_a and not domain_b:
        raise ValueError(
            "no training data given: set data.domain_a and data.domain_b to two image folders, "
            "or data.root to a folder containing trainA/ and trainB/"
        )
    dirs = []
    for key, value in (("data.domain_a", domain_a), ("data.domain_b", domain_b)):
        if not value:
            raise ValueError(f"{key} is not set; give both data.domain_a and data.domain_b")
        folder = Path(value).expanduser()
        if not folder.is_dir():
            raise FileNotFoundError(f"{key}: folder {folder} does not exist")
        dirs.append(folder)
    return dirs[0], dirs[1]


def find_domain_images(
    domain_a: str, domain_b: str, root: str = "", split: str = "train",
    unreadable: list[Path] | None = None,
) -> tuple[list[Path], list[Path]]:
    """The image files of both domains (see `resolve_domain_dirs`), or an error naming the key.

    Cheap (a folder walk, nothing decoded), so a run can check its data before building
    networks. Sub-folders that cannot be listed are warned about and appended to `unreadable`.
    """
    dirs = resolve_domain_dirs(domain_a, domain_b, root, split)
    keys = ("data.root", "data.root") if root else ("data.domain_a", "data.domain_b")
    found = []
    for key, folder in zip(keys, dirs):
        try:
            found.append(find_images(folder, unreadable=unreadable))
        except ValueError as err:  # no images in it
            raise ValueError(f"{key}: {err}") from None
    return found[0], found[1]


def build_dataloader(
    dataset: Dataset,
    batch_size: int,
    start_step: int,
    num_workers: int,
    rank: int = 0,
    world_size: int = 1,
    seed: int = 0,
    pin_memory: bool = False,
) -> DataLoader:
    """An endless DataLoader whose j-th batch is training step start_step + j for this rank.

    A file that cannot be loaded raises its own one-line error (ImageLoadError, or ValueError
    when a whole domain is unreadable) in the main process, whatever `num_workers` is.
    """
    return _Loader(
        _ReportLoadErrors(dataset),
        batch_size=batch_size,
        sampler=StepSampler(start_step, batch_size, rank=rank, world_size=world_size),
        num_workers=num_workers,
        pin_memory=pin_memory,
        drop_last=False,
        persistent_workers=num_workers > 0,
        # Items never use the global RNG; seeding the loader only makes the workers' own seeds
        # reproducible, for any transform added later that might.
        generator=torch.Generator().manual_seed(seed),
        collate_fn=_collate,
    )


class _LoadFailed:
    """An item whose loading raised `error`, carried to the main process as data.

    Raised in a worker, the error would reach the main process re-created with the worker's
    whole traceback as its message (40-odd lines instead of one)."""

    def __init__(self, error: ValueError) -> None:
        self.error = error  # pickles with its .path and .reason (BaseException keeps __dict__)


class _ReportLoadErrors(Dataset):
    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict | _LoadFailed:
        try:
            return self.dataset[index]
        except ValueError as err:  # ImageLoadError, or "all files of domain A are unreadable"
            return _LoadFailed(err)


def _collate(items: list) -> dict | _LoadFailed:
    failed = next((item for item in items if isinstance(item, _LoadFailed)), None)
    return failed or default_collate(items)


class _Loader(DataLoader):
    def __iter__(self) -> Iterator[dict]:
        for batch in super().__iter__():
            if isinstance(batch, _LoadFailed):
                raise batch.error
            yield batch
