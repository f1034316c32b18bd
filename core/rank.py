"""Rank rules shared by every decomposition.

A rule turns a (possibly partial) spectrum into a rank. Rules that bound an error use
the tail energy ``tail[k] = sum_{i>k} s_i**2``: from the reverse cumulative sum when the
whole spectrum is known (no cancellation), else as ``‖A‖² - sum_{i<=k} s_i**2``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .errors import ParameterError

RULES = ("rank", "tol", "abs_frob", "energy", "rel_sv", "abs_sv")

# Thresholds at which the report states the rank of the rules the user did not give.
REFERENCE_THRESHOLDS = {
    "tol": (1e-1, 1e-2, 1e-3, 1e-4, 1e-6),
    "energy": (0.9, 0.99, 0.999),
    "rel_sv": (1e-3, 1e-6),
}


@dataclass(frozen=True)
class RankRule:
    """``kind`` is one of RULES; ``value`` its threshold (an int for ``rank``)."""

    kind: str
    value: float

    def __post_init__(self):
        if self.kind not in RULES:
            raise ParameterError(f"unknown rank rule {self.kind!r}; known: {', '.join(RULES)}")
        v = self.value
        if self.kind == "rank":
            if int(v) != v or v < 1:
                raise ParameterError(f"rank must be a positive integer, got {v}")
        elif self.kind == "tol":
            if not 0 < v < 1:
                raise ParameterError(f"tol must be in (0, 1), got {v}")
        elif self.kind == "energy":
            if not 0 < v <= 1:
                raise ParameterError(f"energy must be in (0, 1], got {v}")
        elif self.kind == "rel_sv":
            if not 0 < v < 1:
                raise ParameterError(
                    f"relative singular value threshold must be in (0, 1), got {v}"
                )
        elif not v >= 0:
            raise ParameterError(f"{self.kind} threshold must be non-negative, got {v}")

    def scaled(self, factor: float) -> RankRule:
        """The same rule for data multiplied by ``factor`` (absolute thresholds scale)."""
        if factor == 1.0 or self.kind not in ("abs_frob", "abs_sv"):
            return self
        return RankRule(self.kind, self.value * factor)

    @property
    def needs_spectrum(self) -> bool:
        return self.kind != "rank"


@dataclass(frozen=True)
class Spectrum:
    """Leading singular values ``s`` (descending) of a matrix with ``‖A‖_F² = total_sq``.

    ``complete`` says whether ``s`` holds every singular value (then ``total_sq`` is
    taken as ``sum(s**2)``).
    """

    s: np.ndarray
    total_sq: float
    max_rank: int
    complete: bool

    def tail_sq(self) -> np.ndarray:
        """tail[k] for k = 0 … len(s): energy left out by keeping k values."""
        s2 = np.asarray(self.s, dtype=np.float64) ** 2
        if self.complete:
            return np.concatenate([np.cumsum(s2[::-1])[::-1], [0.0]])
        head = np.concatenate([[0.0], np.cumsum(s2)])
        return np.maximum(self.total_sq - head, 0.0)

    @property
    def norm_sq(self) -> float:
        if self.complete:
            return float(np.sum(np.asarray(self.s, dtype=np.float64) ** 2))
        return float(self.total_sq)


def select_rank(spec: Spectrum, rule: RankRule) -> int | None:
    """Smallest rank meeting ``rule`` (at least 1), or None when the computed part of the
    spectrum is too short to tell."""
    n = len(spec.s)
    if rule.kind == "rank":
        return max(1, min(int(rule.value), spec.max_rank))
    s = np.asarray(spec.s, dtype=np.float64)
    if rule.kind in ("rel_sv", "abs_sv"):
        cut = rule.value * (s[0] if n else 0.0) if rule.kind == "rel_sv" else rule.value
        k = int(np.count_nonzero(s >= cut)) if n else 0
        if k == n and not spec.complete and n < spec.max_rank:
            return None
        return max(1, k)
    tail = spec.tail_sq()
    if rule.kind == "tol":
        bound = rule.value**2 * spec.norm_sq
    elif rule.kind == "abs_frob":
        bound = rule.value**2
    else:  # energy
        bound = (1.0 - rule.value) * spec.norm_sq
    ok = np.flatnonzero(tail <= bound)
    if ok.size == 0:
        return spec.max_rank if spec.complete else None
    return max(1, int(ok[0]))


def ranks_by_rule(spec: Spectrum, given: RankRule) -> list[dict]:
    """The rank each rule gives: the user's rule, then the others at reference thresholds."""
    rows = [_row(spec, given, True)]
    for kind, values in REFERENCE_THRESHOLDS.items():
        for v in values:
            if kind == given.kind and v == given.value:
                continue
            rows.append(_row(spec, RankRule(kind, v), False))
    return rows


def _row(spec: Spectrum, rule: RankRule, given: bool) -> dict:
    k = select_rank(spec, rule)
    row = {"rule": rule.kind, "threshold": rule.value, "rank": k, "given": given}
    if k is None:
        row["at_least"] = len(spec.s) + 1
    return row


def relative_tail_error(spec: Spectrum, k: int) -> float:
    """Relative Frobenius error of the best rank-k approximation implied by the spectrum."""
    norm_sq = spec.norm_sq
    if norm_sq == 0.0:
        return 0.0
    return float(np.sqrt(spec.tail_sq()[k] / norm_sq))
