"""Turn distributed failures into one clear line (the process-group timeout, a dead peer)."""
from __future__ import annotations

from typing import Optional

import torch


def describe_dist_failure(exc: BaseException, timeout_s: Optional[int]) -> Optional[str]:
    """A one-line explanation if ``exc`` is a failed or timed-out collective, else None."""
    dist_error = getattr(torch.distributed, "DistError", ())
    text = str(exc)
    if not (isinstance(exc, dist_error) or "Timed out" in text or "Connection closed by peer" in text
            or "Connection reset by peer" in text):
        return None
    first = text.strip().splitlines()[0][:200] if text.strip() else type(exc).__name__
    return (f"a collective failed: a peer process died or did not answer within "
            f"runtime.timeout_s={timeout_s} s ({first}); check the other ranks' logs, then rerun "
            f"the same command to resume from the last checkpoint")
