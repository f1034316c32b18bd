"""rankwise plot: figures from a report (matplotlib, the `plot` extra)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated

import typer

from . import options as opt
from .errors import CliUsageError, EngineUnavailable
from .run import guarded

FORMATS = (".png", ".svg", ".pdf")
LABELS = {
    "rmse": "training RMSE",
    "test_rmse": "held-out RMSE",
    "relative_error": "relative error",
    "objective": "objective",
}
# Values below this (relative to σ₁) are rounding, not spectrum: left off the log axes.
FLOOR = 1e-17


def plot(
    report_path: Annotated[
        Path,
        typer.Argument(
            metavar="REPORT",
            help="A JSON report written by a rankwise command.",
            show_default=False,
        ),
    ],  # fmt: skip
    output: Annotated[
        Path,
        typer.Option("--output", "-o", help="Figure file: .png, .svg or .pdf.", show_default=False),
    ],  # fmt: skip
    force: opt.Force = False,
    debug: opt.Debug = False,
) -> None:
    """Figures of a report: the spectrum or energy decay with the chosen rank and tolerance,
    the convergence history, per-cluster errors of local bases, hold-out curves."""
    with guarded("plot", debug):
        from rankwise import formats

        from .results import load_report

        if output.suffix.lower() not in FORMATS:
            raise CliUsageError(f"{output}: unknown figure extension {output.suffix or '(none)'}"
                                f"; use one of {', '.join(FORMATS)}")  # fmt: skip
        rep, _ = load_report(Path(report_path))
        final = formats.check_target(output, force=force, inputs=[Path(report_path)])
        try:
            import matplotlib

            matplotlib.use("Agg")
            import matplotlib.pyplot as plt
        except ImportError:
            raise EngineUnavailable("rankwise plot needs matplotlib: pip install "
                                    "'rankwise[plot]'") from None  # fmt: skip
        panels = [p for p in (_spectrum(rep), _history(rep), _clusters(rep)) if p is not None]
        if not panels:
            raise CliUsageError(f"{report_path}: a {rep['command']} report has no spectrum, "
                                "history or clusters to plot")  # fmt: skip
        fig, axes = plt.subplots(1, len(panels), figsize=(5.6 * len(panels), 4.4),
                                 squeeze=False)  # fmt: skip
        for ax, draw in zip(axes[0], panels, strict=True):
            draw(ax)
            ax.grid(True, which="major", alpha=0.3)
        fig.suptitle(_title(rep), fontsize=10)
        fig.tight_layout()
        _save(fig, final, force)
        plt.close(fig)


def _title(rep: dict) -> str:
    inp = rep.get("input", {})
    shape = "×".join(str(s) for s in inp.get("shape", []))
    uri = str(inp.get("uri", ""))
    uri = uri if len(uri) <= 48 else "…" + uri[-47:]
    return f"rankwise {rep['command']} ({rep['method']['used']})\n{uri} ({shape})"


def _save(fig, final: Path, force: bool) -> None:
    """Write beside the target, then rename: the figure appears whole or not at all."""
    from rankwise.formats import atomic

    staging = atomic.staging_path(final)
    try:
        fig.savefig(staging, format=final.suffix.lower().lstrip("."), dpi=130)
        atomic.sync(staging, is_dir=False)
        atomic.commit(staging, final, force=force, is_dir=False)
    finally:
        atomic.remove(staging)


# --- panels: each returns a function drawing on one axes, or None -----------------------------


def _spectrum(rep: dict):
    m = rep.get("metrics", {})
    rank = rep.get("rank") or {}
    series = {}
    if "singular_values_computed" in m:
        series["σ"] = m["singular_values_computed"]
    elif isinstance(m.get("singular_values"), list) and m["singular_values"]:
        series["σ"] = m["singular_values"]
    elif isinstance(m.get("mode_singular_values"), dict):
        series = {f"mode {k}": v for k, v in m["mode_singular_values"].items()}
    elif isinstance(m.get("bond_singular_values"), dict):
        series = {f"bond {k}": v for k, v in m["bond_singular_values"].items()}
    series = {k: [float(x) for x in v if x is not None] for k, v in series.items() if v}
    if not series:
        return None
    keep = rank.get("value")
    threshold = rank.get("threshold")
    rule = rank.get("rule")

    def positive(ks, ys):
        # zeros (exact tails, rounding-level values) have no place on a log axis
        pts = [(k, y) for k, y in zip(ks, ys, strict=True) if y > FLOOR]
        return zip(*pts, strict=True) if pts else ([], [])

    def draw(ax):
        one = len(series) == 1
        for label, s in series.items():
            s1 = s[0] if s and s[0] > 0 else 1.0
            ks = range(1, len(s) + 1)
            ax.semilogy(*positive(ks, [x / s1 for x in s]), ".-", ms=3, lw=1,
                        label=f"{label} / σ₁" if one else label)  # fmt: skip
            if one:
                tot = sum(x * x for x in s)
                tail, tails = tot, []
                for x in s:
                    tail -= x * x
                    tails.append(math.sqrt(max(tail, 0.0) / tot) if tot > 0 else 0.0)
                ax.semilogy(*positive(ks, tails), "-", lw=1.2,
                            label="relative error keeping k")  # fmt: skip
        if isinstance(keep, int):
            ax.axvline(keep + 0.5, color="C3", ls="--", lw=1, label=f"kept: {keep}")
        elif isinstance(keep, list) and len(series) > 1:
            for i, k in enumerate(keep[1:-1] if rule in ("tol", "max_rank", "tol+max_rank")
                                  and rep["command"] == "tt" else keep):  # fmt: skip
                ax.axvline(k + 0.5, color=f"C{i}", ls="--", lw=0.8)
        # tol bounds the error curve, rel_sv the σ curve: both on one matrix spectrum only
        if one and rule in ("tol", "rel_sv") and isinstance(threshold, (int, float)):
            ax.axhline(threshold, color="C2", ls=":", lw=1, label=f"{rule} = {threshold:g}")
        from matplotlib.ticker import MaxNLocator

        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("k")
        ax.set_ylabel("relative to σ₁" if one else "singular value / σ₁")
        ax.set_title("spectrum and energy decay" if one else "mode / bond spectra", fontsize=10)
        ax.legend(fontsize=8)

    return draw


def _history(rep: dict):
    hist = [h for h in rep.get("history", []) if isinstance(h, dict)]
    if len(hist) < 2:
        return None

    def has(k):
        return any(isinstance(h.get(k), (int, float)) for h in hist)

    # one scale per axes: held-out curves, else the relative error, else the objective
    if has("test_rmse"):
        keys = ["rmse", "test_rmse"]
    elif has("relative_error"):
        keys = ["relative_error"]
    elif has("objective"):
        keys = ["objective"]
    else:
        return None
    baseline = (rep.get("metrics", {}).get("baseline") or {}).get("test", {}).get("rmse")

    def draw(ax):
        restarts = sorted({h.get("restart", 0) for h in hist})
        for key in keys:
            for r in restarts:
                pts = [(i, h[key]) for i, h in enumerate(hist, 1)
                       if h.get("restart", 0) == r and isinstance(h.get(key), (int, float))
                       and h[key] > 0]  # fmt: skip
                if pts:
                    name = LABELS.get(key, key)
                    label = name if len(restarts) == 1 else f"{name} (restart {r})"
                    ax.semilogy(*zip(*pts, strict=True), lw=1.2, label=label)
        if baseline and "test_rmse" in keys:
            ax.axhline(baseline, color="k", ls=":", lw=1, label="baseline held-out RMSE")
        ax.set_xlabel("sweep")
        ax.set_ylabel({"rmse": "RMSE", "relative_error": "relative error"}.get(keys[0], keys[0]))
        ax.set_title("training and held-out RMSE" if "test_rmse" in keys else "convergence",
                     fontsize=10)  # fmt: skip
        ax.legend(fontsize=8)

    return draw


def _clusters(rep: dict):
    m = rep.get("metrics", {})
    clusters = m.get("clusters")
    if not isinstance(clusters, list) or not clusters:
        return None

    def draw(ax):
        idx = [c["cluster"] for c in clusters]
        mean = [c["projection_error"]["mean"] for c in clusters]
        worst = [c["projection_error"]["worst"] for c in clusters]
        ax.bar([i - 0.2 for i in idx], mean, width=0.4, label="mean")
        ax.bar([i + 0.2 for i in idx], worst, width=0.4, label="worst")
        g = m.get("global", {}).get("projection_error", {})
        if g.get("worst"):
            ax.axhline(g["worst"], color="k", ls=":", lw=1, label="global basis, worst")
        ax.set_yscale("log")
        ax.set_xticks(idx, [f"{i}\n{c['snapshots']} snap.\nN={c['rank']}"
                            for i, c in zip(idx, clusters, strict=True)])  # fmt: skip
        ax.set_ylabel("relative projection error")
        ax.set_title(f"local bases, K = {m.get('chosen_k')}, η = {m.get('efficiency', 0):.3g}",
                     fontsize=10)  # fmt: skip
        ax.legend(fontsize=8)

    return draw
