"""The reference's pretrained generators: names, official URLs, download and checksum.

junyanz/pytorch-CycleGAN-and-pix2pix publishes one generator file per direction
(scripts/download_cyclegan_model.sh, download_pix2pix_model.sh): CycleGAN's are resnet_9blocks
with InstanceNorm, pix2pix's unet_256 with BatchNorm. `cyclestyle pretrained download NAME`
fetches one into the torch hub cache, TORCH_HOME/hub/checkpoints/cyclestyle/NAME.pth, and
`--checkpoint pretrained:NAME` loads it from there.

Checksums: the reference publishes none, and none can be known here without downloading, so
the first download's sha256 is recorded beside the file (NAME.pth.sha256) and every later load
and download is checked against it: a file that changes afterwards (a damaged copy, a replaced
upload) is refused. An entry with a known `sha256` is checked against that instead.

No torch at import: `cyclestyle pretrained list` is instant.
"""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from cyclestyle.options import invalid

log = logging.getLogger(__name__)

PREFIX = "pretrained:"
CYCLEGAN_URL = "http://efrosgans.eecs.berkeley.edu/cyclegan/pretrained_models/{name}.pth"
PIX2PIX_URL = "http://efrosgans.eecs.berkeley.edu/pix2pix/models-pytorch/{name}.pth"


@dataclass(frozen=True)
class ZooEntry:
    name: str
    url: str
    netg: str  # the reference's --netG
    image_size: int  # the resolution it was trained at
    sha256: str | None = None  # None: recorded at the first download (see the module docstring)


_CYCLEGAN = ("apple2orange", "orange2apple", "summer2winter_yosemite", "winter2summer_yosemite",
             "horse2zebra", "zebra2horse", "monet2photo", "style_monet", "style_cezanne",
             "style_ukiyoe", "style_vangogh", "sat2map", "map2sat", "cityscapes_photo2label",
             "cityscapes_label2photo", "facades_photo2label", "facades_label2photo",
             "iphone2dslr_flower")
_PIX2PIX = ("edges2shoes", "sat2map", "map2sat", "facades_label2photo", "day2night")

ZOO: dict[str, ZooEntry] = {
    **{name: ZooEntry(name, CYCLEGAN_URL.format(name=name), "resnet_9blocks", 256)
       for name in _CYCLEGAN},
    # pix2pix's names repeat CycleGAN's (sat2map, ...): prefixed to keep both.
    **{f"pix2pix_{name}": ZooEntry(f"pix2pix_{name}", PIX2PIX_URL.format(name=name), "unet_256",
                                   256) for name in _PIX2PIX},
}


def zoo_entry(name: str) -> ZooEntry:
    if name not in ZOO:
        raise invalid("pretrained", name, "not in the reference's model zoo",
                      "one of " + ", ".join(ZOO) + " (cyclestyle pretrained list)")
    return ZOO[name]


def zoo_dir() -> Path:
    """TORCH_HOME/hub/checkpoints/cyclestyle (torch.hub.get_dir(): ~/.cache/torch/hub)."""
    import torch

    return Path(torch.hub.get_dir()) / "checkpoints" / "cyclestyle"


def cached_path(name: str) -> Path:
    return zoo_dir() / f"{zoo_entry(name).name}.pth"


def _checksum_path(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def expected_sha256(name: str) -> str | None:
    """The entry's known sha256, else the one recorded at its first download (else None)."""
    entry = zoo_entry(name)
    if entry.sha256:
        return entry.sha256
    recorded = _checksum_path(cached_path(name))
    return recorded.read_text().split()[0] if recorded.is_file() else None


def pretrained_path(name: str) -> Path:
    """The downloaded, checksum-verified file of zoo entry `name`; one-line errors otherwise."""
    path = cached_path(name)
    if not path.is_file():
        raise FileNotFoundError(f"{PREFIX}{name} is not downloaded (no {path}); run `cyclestyle "
                                f"pretrained download {name}` (from {ZOO[name].url})")
    _verify(name, path)
    return path


def _verify(name: str, path: Path) -> str:
    digest, expected = _sha256(path), expected_sha256(name)
    if expected is not None and digest != expected:
        raise ValueError(f"{path}: sha256 {digest} differs from the expected {expected} "
                         f"({'known' if ZOO[name].sha256 else 'recorded at its first download'}"
                         f"); the file changed: delete it (and {_checksum_path(path).name}) and "
                         f"download again")
    return digest


def download(name: str, url: str | None = None, progress: bool = True) -> Path:
    """Fetch zoo entry `name` (from `url` instead of the official one, e.g. a mirror or a
    file:// URL) into the cache, checked against its sha256; an existing good copy is kept."""
    import torch

    entry = zoo_entry(name)
    path = cached_path(name)
    if path.is_file():
        _verify(name, path)
        log.info("%s is already downloaded (%s)", name, path)
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}.download")
    try:
        torch.hub.download_url_to_file(url or entry.url, str(partial), progress=progress)
        digest = _sha256(partial)
        expected = expected_sha256(name)
        if expected is not None and digest != expected:
            where = ("known" if entry.sha256 else
                     f"recorded at its first download in {_checksum_path(path)}; delete that "
                     "file to accept this one")
            raise ValueError(f"{url or entry.url}: sha256 {digest} differs from the expected "
                             f"{expected} ({where}); not kept")
        if expected is None:  # the first download: record it, so later loads can be checked
            _checksum_path(path).write_text(f"{digest}  {path.name}\n")
        os.replace(partial, path)
    except OSError as err:  # URLError is an OSError: no network, 404, ...
        raise OSError(f"cannot download {name} from {url or entry.url}: "
                      f"{getattr(err, 'reason', None) or err}") from None
    finally:
        partial.unlink(missing_ok=True)
    return path


def describe(name: str) -> str:
    entry = ZOO[name]
    state = "downloaded" if cached_path(name).is_file() else "not downloaded"
    return f"{name:<30} {entry.netg:<15} {state:<15} {entry.url}"
