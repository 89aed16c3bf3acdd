"""DBDMP: Dual-Branch network with Dynamically Mixed Pseudo-labels (Wang et al., MELBA 2024, LNQ2023).

A shared PlainConvUNet encoder feeds two decoders (the network's own ``decoder`` = main branch,
plus an auxiliary ``UNetDecoder`` that sees dropout-perturbed skips). Each iteration:

* supervised loss on known voxels, per branch: partial CE + symmetric CE + Tversky
  (``alpha`` weighs false positives, beta = 1 - alpha false negatives, ``gamma`` is the focal
  exponent of the Tversky term);
* pseudo-label: the two branches' probabilities mixed with a random weight beta ~ U(0, 1), then
  sharpened with temperature ``tau`` (softmax(mix / tau)), detached;
* consensus-weighted KL-CE: for branch a against branch b, per voxel
  ``w = exp(-KL(p_a || p_b))``, loss = sum(w * CE(p_a, pseudo) + KL) / sum(w), averaged over both
  directions, so voxels where the branches disagree teach less;
* total = supervised + lambda(t) * pseudo, lambda(t) = ``lambda`` * exp(-5 (1 - t)^2) (sigmoid ramp-up
  over the first ``rampup_fraction`` of training).

Only the main branch is exported (a plain PlainConvUNet), so ``lnq segment`` loads it unchanged.
The paper's Model-Genesis self-supervised pre-training is not included.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .config import DBDMPSettings
from .losses import partial_cross_entropy, symmetric_cross_entropy, tversky_loss


class DualBranchUNet(nn.Module):
    """Wraps a PlainConvUNet (``self.network``) and adds an auxiliary decoder on its encoder."""

    def __init__(self, network: nn.Module, aux_dropout: float = 0.3):
        from dynamic_network_architectures.building_blocks.unet_decoder import UNetDecoder

        super().__init__()
        self.network = network
        decoder = network.decoder
        self.decoder_aux = UNetDecoder(
            network.encoder, decoder.num_classes, [len(stage.convs) for stage in decoder.stages], deep_supervision=False
        )
        # a different start, as in the paper (two decoders initialised independently)
        self.decoder_aux.apply(
            lambda m: nn.init.kaiming_normal_(m.weight, a=1e-2) if isinstance(m, (nn.Conv3d, nn.ConvTranspose3d)) else None
        )
        self.aux_dropout = nn.Dropout3d(aux_dropout)

    def forward(self, x: torch.Tensor, both: bool = True):
        skips = self.network.encoder(x)
        main = self.network.decoder(skips)
        if not both:
            return main
        aux = self.decoder_aux([self.aux_dropout(s) for s in skips])
        return main, aux


def mixed_pseudo_label(prob_main: torch.Tensor, prob_aux: torch.Tensor, beta: float, tau: float) -> torch.Tensor:
    """Sharpened dynamic mix softmax((beta * p_main + (1 - beta) * p_aux) / tau), no gradient."""
    with torch.no_grad():
        mix = beta * prob_main + (1.0 - beta) * prob_aux
        return torch.softmax(mix / tau, dim=1)


def consensus_kl_ce(logits_a: torch.Tensor, logits_b: torch.Tensor, pseudo: torch.Tensor) -> torch.Tensor:
    """sum(w * CE(a, pseudo) + KL(a || b)) / sum(w) with w = exp(-KL(a || b)) per voxel; b is detached."""
    log_p_a = F.log_softmax(logits_a.float(), dim=1)
    p_b = torch.softmax(logits_b.detach().float(), dim=1)
    kl = (torch.exp(log_p_a) * (log_p_a - torch.log(p_b.clamp(min=1e-7)))).sum(dim=1)
    weight = torch.exp(-kl)
    ce = -(pseudo * log_p_a).sum(dim=1)
    return (weight * ce + kl).sum() / weight.sum().clamp(min=1e-7)


def sigmoid_rampup(progress: float, rampup_fraction: float) -> float:
    """exp(-5 (1 - t)^2) with t = progress / rampup_fraction clipped to [0, 1] (Laine & Aila)."""
    if rampup_fraction <= 0:
        return 1.0
    t = min(max(progress / rampup_fraction, 0.0), 1.0)
    return float(math.exp(-5.0 * (1.0 - t) ** 2))


def supervised_loss(logits: torch.Tensor, target: torch.Tensor, alpha: float, gamma: float) -> torch.Tensor:
    return (
        partial_cross_entropy(logits, target)
        + symmetric_cross_entropy(logits, target)
        + tversky_loss(logits, target, alpha=alpha, beta=1.0 - alpha, gamma=gamma)
    )


def dbdmp_loss(
    logits_main: torch.Tensor,
    logits_aux: torch.Tensor,
    target: torch.Tensor,
    progress: float,
    settings: DBDMPSettings,
    beta: float,
) -> tuple[torch.Tensor, dict]:
    """Total DBDMP loss and its parts. ``progress`` in [0, 1] drives the ramp-up; ``beta`` the mixing."""
    alpha, gamma, tau = settings.alpha, settings.gamma, settings.tau
    sup = 0.5 * (supervised_loss(logits_main, target, alpha, gamma) + supervised_loss(logits_aux, target, alpha, gamma))
    pseudo = mixed_pseudo_label(torch.softmax(logits_main.float(), 1), torch.softmax(logits_aux.float(), 1), beta, tau)
    pseudo_loss = 0.5 * (consensus_kl_ce(logits_main, logits_aux, pseudo) + consensus_kl_ce(logits_aux, logits_main, pseudo))
    weight = settings.pseudo_weight * sigmoid_rampup(progress, settings.rampup_fraction)
    total = sup + weight * pseudo_loss
    return total, {"supervised": float(sup.detach()), "pseudo": float(pseudo_loss.detach()), "pseudo_weight": weight}
