"""torch.hub entry points: cyclestyle generators from any source `--checkpoint` accepts.

    import torch
    g_ab = torch.hub.load("OWNER/cyclestyle", "generator", checkpoint="hf://user/photo2painting")
    g_ab = torch.hub.load("path/to/cyclestyle", "generator", source="local",
                          checkpoint="runs/p2p", direction="a2b")
    painting = torch.hub.load("OWNER/cyclestyle", "translator", checkpoint="pretrained:style_monet")

`checkpoint` is a training checkpoint (file or run folder), a release folder, a Hub repo
(hf://user/name), pretrained:NAME (`cyclestyle pretrained list`), or a pytorch-CycleGAN-and-pix2pix
/ CUT generator file. torch.hub imports this file from a checkout without installing it, so the
package's own dependencies (below torch) must already be installed: `pip install cyclestyle`.
"""

dependencies = ["torch"]


def generator(checkpoint: str, direction: str = "a2b", revision: str | None = None):
    """The generator network (nn.Module, eval mode, CPU): (N, 3, H, W) RGB in [-1, 1] of any
    H x W -> its translation, same shape. direction: a2b (G_AB) or b2a (G_BA)."""
    from cyclestyle.translate.sources import load_model

    return load_model(checkpoint, revision).generator(direction)


def translator(checkpoint: str, direction: str = "a2b", revision: str | None = None, **kwargs):
    """A cyclestyle Translator (PIL images in and out, device, precision, tiling; keyword
    arguments as for cyclestyle.translate.Translator)."""
    from cyclestyle.translate.translator import Translator

    return Translator.from_pretrained(checkpoint, direction, revision, **kwargs)
