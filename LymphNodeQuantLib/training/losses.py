"""Losses on targets with excluded voxels (value :data:`IGNORE`).

Hand-written rather than MONAI's DiceCELoss because MONAI's losses have no ignore label: every
function here averages only over the voxels the strategy says are known.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .cache import IGNORE


def _known(target: torch.Tensor) -> torch.Tensor:
    return target != IGNORE


def partial_cross_entropy(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Cross-entropy over known voxels (``target`` (B, Z, Y, X) long; 0 when none are known)."""
    known = _known(target)
    if not known.any():
        return logits.sum() * 0.0
    return F.cross_entropy(logits, target.masked_fill(~known, 0), reduction="none")[known].mean()


def soft_dice_loss(logits: torch.Tensor, target: torch.Tensor, smooth: float = 1e-5) -> torch.Tensor:
    """1 - batch soft Dice of the node class over known voxels."""
    known = _known(target).float()
    probability = torch.softmax(logits.float(), dim=1)[:, 1] * known
    reference = (target == 1).float()
    intersection = (probability * reference).sum()
    return 1.0 - (2.0 * intersection + smooth) / (probability.sum() + reference.sum() + smooth)


def dice_ce_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """nnU-Net's default: cross-entropy + soft Dice, both restricted to known voxels."""
    return partial_cross_entropy(logits, target) + soft_dice_loss(logits, target)


def symmetric_cross_entropy(
    logits: torch.Tensor, target: torch.Tensor, ce_weight: float = 1.0, reverse_weight: float = 1.0, log_zero: float = -4.0
) -> torch.Tensor:
    """Symmetric CE (Wang et al. 2019): CE + reverse CE (-sum p * log(one_hot), log 0 clipped to ``log_zero``)."""
    known = _known(target)
    if not known.any():
        return logits.sum() * 0.0
    probability = torch.softmax(logits.float(), dim=1).clamp(min=1e-7, max=1.0)
    one_hot = F.one_hot(target.masked_fill(~known, 0).long(), logits.shape[1]).movedim(-1, 1).float()
    log_one_hot = torch.where(one_hot > 0, torch.zeros_like(one_hot), torch.full_like(one_hot, log_zero))
    reverse = -(probability * log_one_hot).sum(dim=1)[known].mean()
    return ce_weight * partial_cross_entropy(logits, target) + reverse_weight * reverse


def tversky_loss(
    logits: torch.Tensor, target: torch.Tensor, alpha: float = 0.4, beta: float = 0.6, gamma: float = 1.0, smooth: float = 1e-5
) -> torch.Tensor:
    """(1 - Tversky index)^gamma of the node class over known voxels; alpha weighs FP, beta FN."""
    known = _known(target).float()
    probability = torch.softmax(logits.float(), dim=1)[:, 1] * known
    reference = (target == 1).float()
    true_positive = (probability * reference).sum()
    false_positive = (probability * (1 - reference)).sum()
    false_negative = ((1 - probability) * reference * known).sum()
    index = (true_positive + smooth) / (true_positive + alpha * false_positive + beta * false_negative + smooth)
    return (1.0 - index).clamp(min=0) ** gamma
