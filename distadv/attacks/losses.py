"""Per-example attack objectives. The attack maximises them; each returns shape (B,)."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def ce_loss(logits: torch.Tensor, y: torch.Tensor, targeted: bool = False) -> torch.Tensor:
    """Cross-entropy; targeted attacks maximise -CE(target)."""
    loss = F.cross_entropy(logits.float(), y, reduction="none")
    return -loss if targeted else loss


def cw_loss(logits: torch.Tensor, y: torch.Tensor, targeted: bool = False) -> torch.Tensor:
    """Carlini-Wagner margin: max_{j != y} z_j - z_y (targeted: z_t - max_{j != t} z_j)."""
    z = logits.float()
    z_y = z.gather(1, y[:, None]).squeeze(1)
    other = z.masked_fill(F.one_hot(y, z.shape[1]).bool(), float("-inf")).amax(dim=1)
    return z_y - other if targeted else other - z_y


def kl_loss(logits: torch.Tensor, p_clean: torch.Tensor, targeted: bool = False) -> torch.Tensor:
    """KL(p_clean || softmax(logits)) per example: the TRADES inner objective."""
    del targeted
    logp = F.log_softmax(logits.float(), dim=1)
    return F.kl_div(logp, p_clean, reduction="none").sum(dim=1)


LOSSES = {"ce": ce_loss, "cw": cw_loss}
