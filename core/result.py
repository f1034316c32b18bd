"""The result every algorithm returns: arrays by output name plus what certifies them."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class Result:
    """``arrays`` maps DESIGN.md output names (``W``, ``H``, ``factors/0`` …) to arrays.

    ``metrics`` holds the certified figures (errors, losses, checks), ``history`` one entry
    per iteration (from :func:`rankwise.core.loop.run_loop`), ``details`` how the method ran,
    ``rank`` the rank and rule that chose it where a rank rule applies.
    """

    arrays: dict[str, np.ndarray]
    method: str
    method_reason: str
    metrics: dict
    details: dict = field(default_factory=dict)
    history: list = field(default_factory=list)
    converged: bool = True
    stop_reason: str = "direct method"
    warnings: tuple = ()
    rank: dict | None = None
