"""The CycleGAN objective: which images enter which loss, with which weight and label.

Kept apart from the trainer's accelerate plumbing so it can be read against the paper (Zhu et
al. 2017, eq. 3 plus the identity and perceptual terms) and pinned by tests on tiny fixed
networks. Nothing here steps an optimizer or calls `.backward()`.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from cyclestyle.train.config import LossConfig
from cyclestyle.train.losses import GANLoss, cycle_loss, identity_loss, patch_nce_loss


def generator_losses(g_ab: nn.Module, g_ba: nn.Module, d_a: nn.Module, d_b: nn.Module,
                     real_a: Tensor, real_b: Tensor, lc: LossConfig, gan_loss: GANLoss,
                     perceptual: nn.Module | None = None,
                     augment: Callable[[Tensor], Tensor] | None = None,
                     ) -> tuple[Tensor, dict[str, Tensor], Tensor, Tensor]:
    """The generators' loss; returns (total, parts, fake_a, fake_b).

    g_adv     = GAN(D_B(G_AB(A)), real) + GAN(D_A(G_BA(B)), real)
    cycle     = λ_cycle (|G_BA(G_AB(A)) - A|_1 + |G_AB(G_BA(B)) - B|_1)
    identity  = λ_idt λ_cycle (|G_BA(A) - A|_1 + |G_AB(B) - B|_1)  (relative, as in the paper)
    perceptual= λ_perc VGG(rec, real) over both cycles; content = λ_content VGG(fake, source)

    `augment` (DiffAugment) transforms what the discriminators see, as in their own step.
    """
    seen = augment or (lambda x: x)
    fake_b = g_ab(real_a)  # G_AB(A)
    fake_a = g_ba(real_b)  # G_BA(B)
    # Second passes batched: InstanceNorm/GroupNorm are per sample, so this equals separate
    # calls, with half the kernel launches. Identity terms ride along when enabled.
    use_idt = lc.lambda_identity > 0
    out_b = g_ab(torch.cat([fake_a, real_b]) if use_idt else fake_a)
    out_a = g_ba(torch.cat([fake_b, real_a]) if use_idt else fake_b)
    rec_b, idt_b = out_b.split(len(real_b)) if use_idt else (out_b, None)  # G_AB(G_BA(B)), G_AB(B)
    rec_a, idt_a = out_a.split(len(real_a)) if use_idt else (out_a, None)  # G_BA(G_AB(A)), G_BA(A)
    parts = {
        "g_adv": gan_loss(d_b(seen(fake_b)), True, for_discriminator=False)
        + gan_loss(d_a(seen(fake_a)), True, for_discriminator=False),
        "cycle": lc.lambda_cycle * (cycle_loss(rec_a, real_a) + cycle_loss(rec_b, real_b)),
    }
    if use_idt:
        parts["identity"] = lc.lambda_identity * lc.lambda_cycle * (
            identity_loss(idt_a, real_a) + identity_loss(idt_b, real_b))
    vgg_terms = {"perceptual": (lc.lambda_perceptual, torch.cat([rec_a, rec_b])),  # cycle
                 "content": (lc.lambda_content, torch.cat([fake_b, fake_a]))}  # translation
    vgg_terms = {k: v for k, v in vgg_terms.items() if v[0] > 0}
    if vgg_terms:  # one VGG pass for both terms: they share the target
        distances = perceptual.many([x.float() for _, x in vgg_terms.values()],
                                    torch.cat([real_a, real_b]).float())
        for (key, (weight, _)), distance in zip(vgg_terms.items(), distances):
            parts[key] = weight * distance
    return sum(parts.values()), parts, fake_a, fake_b


def contrastive_generator_losses(g_ab: nn.Module, encode: Callable[[Tensor], list[Tensor]],
                                 d_b: nn.Module, heads: nn.Module,
                                 real_a: Tensor, real_b: Tensor, lc: LossConfig, objective: str,
                                 gan_loss: GANLoss,
                                 augment: Callable[[Tensor], Tensor] | None = None,
                                 perceptual: nn.Module | None = None,
                                 ) -> tuple[Tensor, dict[str, Tensor], Tensor]:
    """CUT / FastCUT (Park et al. 2020): G_AB and D_B only; returns (total, parts, fake_b).

    g_adv = GAN(D_B(G_AB(A)), real)
    nce   = λ_NCE PatchNCE(A, G_AB(A))                                        (fastcut)
    nce   = λ_NCE (PatchNCE(A, G_AB(A)) + PatchNCE(B, G_AB(B))) / 2           (cut)
    content = λ_content VGG(G_AB(A), A)      (when λ_content > 0; there is no reconstruction
                                              for the cycle-perceptual term)

    PatchNCE compares G_AB's encoder features of each source with those of its translation at
    the same sampled positions; the identity term keeps G_AB from changing what is already B.
    `encode` is G_AB's encoder (`g_ab.encode`, called outside any DDP wrapper).
    """
    seen = augment or (lambda x: x)
    identity = objective == "cut"
    sources = torch.cat([real_a, real_b]) if identity else real_a
    outputs = g_ab(sources)  # G_AB(A) (and G_AB(B)), one batched pass
    fake_b = outputs[: len(real_a)]
    # Encoder features of sources and translations in one pass; the sources' are the keys.
    features = encode(torch.cat([sources, outputs]))
    keys, positions = heads([f[: len(sources)] for f in features], lc.nce_patches)
    queries, _ = heads([f[len(sources):] for f in features], lc.nce_patches, positions)
    n = len(real_a)
    nce = patch_nce_loss([q[:n] for q in queries], [k[:n] for k in keys], lc.nce_temperature)
    if identity:
        nce_b = patch_nce_loss([q[n:] for q in queries], [k[n:] for k in keys], lc.nce_temperature)
        nce = 0.5 * (nce + nce_b)
    parts = {"g_adv": gan_loss(d_b(seen(fake_b)), True, for_discriminator=False),
             "nce": lc.nce_weight(objective) * nce}
    if lc.lambda_content > 0:
        parts["content"] = lc.lambda_content * perceptual(fake_b.float(), real_a.float())
    return sum(parts.values()), parts, fake_b


def discriminator_loss(d: nn.Module, real: Tensor, fake: Tensor, gan_loss: GANLoss,
                       augment: Callable[[Tensor], Tensor] | None = None,
                       r1_weight: float = 0.0, parts: dict[str, Tensor] | None = None) -> Tensor:
    """0.5 (GAN(D(real), real) + GAN(D(fake), fake)); `fake` comes from the history pool.

    One call on real and fake together: a DDP module must run once per backward."""
    x = torch.cat([real, fake])
    if augment is not None:  # the same policy for real and fake, parameters drawn per image
        x = augment(x)
    if r1_weight > 0:  # the penalty needs the gradient of D with respect to what it sees
        x = x.detach().requires_grad_(True)
    pred = d(x)
    preds = pred if isinstance(pred, (list, tuple)) else [pred]
    pred_real = [p[: len(real)] for p in preds]
    pred_fake = [p[len(real):] for p in preds]
    loss = 0.5 * (gan_loss(pred_real, True) + gan_loss(pred_fake, False))
    if parts is not None:  # diagnostics: the share of patches D calls right (no gradient)
        with torch.no_grad():
            parts["acc_real"] = _mean_of([gan_loss.says_real(p).float().mean() for p in pred_real])
            parts["acc_fake"] = _mean_of([(~gan_loss.says_real(p)).float().mean() for p in pred_fake])
    if r1_weight > 0:
        penalty = r1_penalty(sum(p.float().sum() for p in pred_real), x, len(real))
        if parts is not None:
            parts["r1"] = penalty.detach()
        loss = loss + r1_weight * penalty
    return loss


def _mean_of(values: list[Tensor]) -> Tensor:
    return torch.stack(values).mean()


def r1_penalty(real_score: Tensor, inputs: Tensor, count: int) -> Tensor:
    """R1 (Mescheder et al. 2018): mean over real images of |grad_x D(x)|^2; `inputs[:count]`
    are the real images (as D saw them), `real_score` the sum of D's outputs on them."""
    (grad,) = torch.autograd.grad(real_score, inputs, create_graph=True)
    return grad[:count].float().pow(2).flatten(1).sum(1).mean()
