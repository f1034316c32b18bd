"""Local reduced-order bases: cluster the snapshots, one POD per cluster.

Dissimilarities (in the inner product of ``mass``/``weights``, see :mod:`rankwise.core.pod`)
---------------------------------------------------------------------------------------------
* ``sine`` (default): ``√(1 − cos²θ)`` between two snapshots, ``cos θ = ⟨x, y⟩/(‖x‖‖y‖)``
  (Daniel, Casenave, Akkari & Ryckelynck): scale-invariant, so snapshots that differ by an
  amplitude share a cluster; from the Gram, so values below ~√eps are rounding.
* ``euclidean``: ``‖x − y‖``.
* ``grassmann``: snapshots come in groups (one simulation each, ``groups``: a label per
  snapshot); each group gets its own POD basis by the rule, and two groups are at the chordal
  distance of their bases, ``d² = max(p, q) − ‖V_gᵀ M V_h‖_F² = Σ sin²θ_i + |p − q|`` (the
  principal angles θ_i; missing dimensions count as right angles — Ye & Lim 2016). Groups are
  clustered whole; ``labels`` still has one entry per snapshot.

Clustering
----------
k-medoids on the dissimilarity matrix, seeded: k-medoids++ initialisation (first medoid
uniform, the next ones with probability ∝ squared distance to the nearest chosen, all from
``rng``), then sweeps of :func:`rankwise.core.loop.run_loop`, each one an *alternate* step
(every medoid moves to the member minimising the within-cluster sum; points reassigned) and
the best *swap* of one medoid with one non-medoid (the FastPAM1 gain computation of Schubert
& Rousseeuw 2019: O(m²) per sweep from the nearest and second-nearest medoid distances).
The objective (sum of distances to the nearest medoid) never increases; the run stops when a
sweep changes nothing. ``n_init`` restarts; the lowest objective is kept (the first on ties).
Clusters are numbered by ascending medoid index.

``refine=True`` adds k-subspaces iterations (PEBL-ROM style, Amsallem & Haasdonk): with the
ranks ``N_k`` the rule gave on the k-medoids clusters held fixed, each snapshot moves to the
cluster whose basis captures it best (least projection error), bases are recomputed by POD,
repeat until no snapshot moves. With fixed ranks both steps can only lower the total squared
projection error, so the objective is monotone. The final bases are recomputed with the rule.

Efficiency criterion (rankwise's own, after Daniel et al.'s a-priori criterion)
-------------------------------------------------------------------------------
``η(K) = Σ_k (|C_k|/m)·N_k(ε) / N_glob(ε)``: the expected size of the basis an online
snapshot uses (it falls in cluster k with frequency |C_k|/m) relative to the global basis of
the same rule; ``η < 1`` means local bases pay off. A clustering is *feasible* when every
cluster has more snapshots than its basis has modes (``N_k < |C_k|``): otherwise the rule
could not reduce that cluster at all and its basis merely spans its snapshots. Given a range
of K, the K with the smallest feasible η is chosen (smallest K on ties; the smallest η
overall, with a warning, when none is feasible).

Outputs: ``basis/<k>``, ``singular_values/<k>``, ``labels`` (int64, one per snapshot) and
``medoids`` (n × K: the medoid snapshots; with ``grassmann`` the leading mode of each medoid
group's basis scaled by its singular value, a representative vector for
:func:`rankwise.core.pod.project`).
"""

from __future__ import annotations

import copy
import dataclasses
import math

import numpy as np

from .checkpoint import Checkpointable, rng_state, set_rng_state
from .errors import DataError, ParameterError
from .loop import run_loop, run_restarts
from .pod import dissimilarities, inner_product, pod
from .rank import RankRule
from .result import Result
from .validate import check_finite, working_dtype

DISSIMILARITIES = ("sine", "euclidean", "grassmann")
# A swap is applied when it lowers the objective by more than this fraction (rounding).
SWAP_RTOL = 1e-12


# --- k-medoids -------------------------------------------------------------------------------


def _plusplus(d: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    m = d.shape[0]
    med = [int(rng.integers(m))]
    near = d[med[0]].copy()
    for _ in range(1, k):
        p = near**2
        tot = float(p.sum())
        if tot <= 0:  # all points coincide with a medoid: take the first unused
            cand = np.setdiff1d(np.arange(m), med)
            nxt = int(cand[0])
        else:
            nxt = int(rng.choice(m, p=p / tot))
            if nxt in med:
                nxt = int(np.setdiff1d(np.arange(m), med)[0])
        med.append(nxt)
        near = np.minimum(near, d[nxt])
    return np.array(med, dtype=np.int64)


def _assign(d: np.ndarray, med: np.ndarray):
    dm = d[:, med]
    order = np.argsort(dm, axis=1, kind="stable")
    lab = order[:, 0]
    d1 = dm[np.arange(d.shape[0]), lab]
    d2 = dm[np.arange(d.shape[0]), order[:, 1]] if len(med) > 1 else np.full(d.shape[0], np.inf)
    return lab, d1, d2


class _KMedoids(Checkpointable):
    """One restart: state (medoids, labels) and the sweep run by run_loop."""

    STATE = ("med", "lab", "d1", "d2", "swaps")

    def __init__(self, d: np.ndarray, med: np.ndarray):
        self.d = d
        self.med = med.copy()
        self.lab, self.d1, self.d2 = _assign(d, self.med)
        self.swaps = 0

    @property
    def objective(self) -> float:
        return float(self.d1.sum())

    def objective0(self) -> float:
        return self.objective

    def details(self) -> dict:
        return {"swaps": self.swaps}

    def sweep(self, it: int):
        d, k = self.d, len(self.med)
        # alternate: each medoid moves to its cluster's 1-median
        for c in range(k):
            members = np.flatnonzero(self.lab == c)
            if members.size:
                sub = d[np.ix_(members, members)].sum(axis=0)
                best = members[int(np.argmin(sub))]
                cur = float(d[self.med[c], members].sum())
                if float(sub.min()) < cur * (1 - SWAP_RTOL):
                    self.med[c] = best
        self.lab, self.d1, self.d2 = _assign(d, self.med)
        # best single swap (FastPAM1 gains)
        if k < d.shape[0]:
            dh = d  # dh[o, h] = distance of point o to candidate h
            base = (np.minimum(dh, self.d1[:, None]) - self.d1[:, None]).sum(axis=0)  # (m,)
            extra = np.minimum(dh, self.d2[:, None]) - np.minimum(dh, self.d1[:, None])
            onehot = np.zeros((k, d.shape[0]))
            onehot[self.lab, np.arange(d.shape[0])] = 1.0
            delta = base[None, :] + onehot @ extra  # (k, m): remove medoid i, add h
            delta[:, self.med] = np.inf
            i, h = np.unravel_index(int(np.argmin(delta)), delta.shape)
            if delta[i, h] < -SWAP_RTOL * max(self.objective, 1e-300):
                self.med[i] = h
                self.swaps += 1
                self.lab, self.d1, self.d2 = _assign(d, self.med)
        return self.objective, {"swaps": self.swaps}


def kmedoids(
    d: np.ndarray,
    k: int,
    *,
    n_init: int = 10,
    rng=None,
    max_iter: int = 100,
    callback=None,
    resume: dict | None = None,
) -> dict:
    """Seeded k-medoids with restarts on a dissimilarity matrix (see the module docstring).

    Returns ``labels`` (clusters numbered by ascending medoid index), ``medoids`` (indices),
    ``objective`` and one row per restart. ``resume``: an ``event.state()`` of an
    interrupted run on the same matrix with the same parameters."""
    d = np.asarray(d, dtype=np.float64)
    m = d.shape[0]
    if d.ndim != 2 or d.shape != (m, m):
        raise DataError(f"k-medoids needs a square dissimilarity matrix; got {d.shape}")
    if not 1 <= k <= m:
        raise ParameterError(f"{k} clusters for {m} items: need 1 ≤ K ≤ {m}")
    if n_init < 1:
        raise ParameterError(f"n_init must be ≥ 1, got {n_init}")
    rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)

    def make(restart):
        return _KMedoids(d, _plusplus(d, k, rng)), "k-medoids++"

    runs = run_restarts(make, n_init=n_init, tol=0.0, max_iter=max_iter, callback=callback,
                        factors=lambda s: (s.med, s.lab), rng=rng, resume=resume)  # fmt: skip
    rows = [{"restart": r.restart, "initial_objective": r.initial_objective,
             "objective": r.objective, "iterations": r.loop.iterations,
             "converged": r.loop.converged, "stop_reason": r.loop.stop_reason, **r.details}
            for r in runs]  # fmt: skip
    best = min(runs, key=lambda r: (r.objective, r.restart))
    med, lab = best.factors
    loop = best.loop
    order = np.argsort(med, kind="stable")
    relabel = np.empty(k, dtype=np.int64)
    relabel[order] = np.arange(k)
    return {
        "labels": relabel[lab],
        "medoids": med[order].astype(np.int64),
        "objective": best.objective,
        "restarts": rows,
        "history": loop.history,
        "converged": loop.converged,
        "stop_reason": loop.stop_reason,
    }


# --- local POD -------------------------------------------------------------------------------


def _basis_method(n: int, cols: int) -> str:
    return "snapshots" if n >= 4 * cols else "svd"


def _cluster_pod(x, idx, rule, ip, rng):
    sub = np.ascontiguousarray(x[:, idx])
    if rule.kind == "rank" and rule.value > min(sub.shape):
        rule = RankRule("rank", min(sub.shape))  # a small cluster: infeasible, flagged by η
    return pod(sub, rule, mass=ip, method=_basis_method(x.shape[0], len(idx)), rng=rng)


def _captured(v: np.ndarray, x: np.ndarray, ip) -> np.ndarray:
    """‖Vᵀ M x_j‖² for every column (the energy the basis captures)."""
    if v.shape[1] == 0:
        return np.zeros(x.shape[1])
    c = np.asarray(v, np.float64).T @ ip.apply(np.asarray(x, np.float64))
    return np.einsum("ij,ij->j", c, c)


def _refine(x, labels, ranks, ip, rng, max_iter, callback, resume=None):
    """k-subspaces with fixed ranks; returns labels, the loop and the initial objective.
    ``resume``: an ``event.state()`` of an interrupted refinement."""
    k = len(ranks)
    norms = ip.sq_norms(x)
    bases = [None] * k

    def fit():
        for c in range(k):
            idx = np.flatnonzero(labels == c)
            if idx.size:  # an emptied cluster keeps its basis (it holds no snapshot)
                r = min(ranks[c], idx.size, x.shape[0])
                bases[c] = _cluster_pod(x, idx, RankRule("rank", r), ip, rng).arrays["basis"]

    moved_total = [0]
    if resume is None:
        fit()
        cap = np.stack([_captured(bases[c], x, ip) for c in range(k)])
        objective = float(np.sum(norms - cap[labels, np.arange(x.shape[1])]))
    else:  # an emptied cluster's basis is from earlier labels: it travels in the state
        saved = resume["refine"]
        labels = saved["labels"].copy()
        bases[:] = [None if b is None else b.copy() for b in saved["bases"]]
        objective, moved_total[0] = saved["initial_objective"], saved["moved"]

    def state():
        return {"refine": {"labels": labels.copy(), "moved": moved_total[0],
                           "bases": [None if b is None else b.copy() for b in bases],
                           "initial_objective": objective}}  # fmt: skip

    def sweep(it):
        nonlocal labels
        cap = np.stack([_captured(bases[c], x, ip) for c in range(k)])
        new = np.argmax(cap, axis=0)
        # keep the current cluster on ties (no churn from rounding)
        cur = cap[labels, np.arange(x.shape[1])]
        new = np.where(cap[new, np.arange(x.shape[1])] > cur * (1 + 1e-12), new, labels)
        moved = int(np.count_nonzero(new != labels))
        moved_total[0] += moved
        labels = new
        fit()
        cap = np.stack([_captured(bases[c], x, ip) for c in range(k)])
        obj = float(np.sum(np.maximum(norms - cap[labels, np.arange(x.shape[1])], 0.0)))
        return obj, {"moved": moved}

    loop = run_loop(sweep, tol=1e-12, max_iter=max_iter, callback=callback,
                    initial_objective=objective, state=state,
                    resume=None if resume is None else resume["loop"])  # fmt: skip
    return labels, loop, objective


def local_pod(
    x,
    rule: RankRule,
    *,
    clusters=2,
    dissimilarity: str = "sine",
    groups=None,
    n_init: int = 10,
    refine: bool = False,
    max_iter: int = 100,
    rng=None,
    mass=None,
    weights=None,
    callback=None,
    resume: dict | None = None,
) -> Result:
    """Local POD bases of the snapshot matrix ``x`` (n × m); see the module docstring.

    ``clusters`` is a K or a sequence/range of K (the best by η is kept); ``groups`` (one
    label per snapshot) is required by ``grassmann``. ``resume``: an ``event.state()`` of an
    interrupted run with the same data and parameters (it holds the finished K, the k-medoids
    restarts or the refinement of the current one, and ``rng``). Returns a :class:`Result` with
    ``basis/<k>``, ``singular_values/<k>``, ``labels`` and ``medoids``.
    """
    if not isinstance(rule, RankRule):
        raise ParameterError("rule must be a RankRule (see rankwise.core.pod.rule_from)")
    if dissimilarity not in DISSIMILARITIES:
        raise ParameterError(
            f"unknown dissimilarity {dissimilarity!r}; choose from {', '.join(DISSIMILARITIES)}"
        )
    ks = [int(clusters)] if np.ndim(clusters) == 0 else [int(c) for c in clusters]
    if not ks or any(c < 1 for c in ks):
        raise ParameterError(f"clusters must be positive integers, got {clusters}")
    if n_init < 1:
        raise ParameterError(f"n_init must be ≥ 1, got {n_init}")
    x = np.asarray(x)
    if x.ndim != 2 or 0 in x.shape:
        raise DataError(f"local POD needs a non-empty 2-D snapshot matrix; got shape {x.shape}")
    wdt = working_dtype(x.dtype, method="local POD")
    check_finite(x, method="local POD")
    x = np.asarray(x, dtype=wdt)
    n, m = x.shape
    rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    ip = inner_product(n, mass=mass, weights=weights)
    warnings: list[str] = []
    # items clustered: snapshots, or groups of snapshots
    if dissimilarity == "grassmann":
        if groups is None:
            raise ParameterError("grassmann needs groups (one simulation label per snapshot)")
        g = np.asarray(groups)
        if g.ndim != 1 or g.shape[0] != m:
            raise DataError(f"groups has shape {g.shape}; one label per snapshot ({m}) needed")
        names, item_of = np.unique(g, return_inverse=True)
        group_bases = []
        for i in range(len(names)):
            res = _cluster_pod(x, np.flatnonzero(item_of == i), rule, ip, rng)
            group_bases.append(
                (
                    res.arrays["basis"].astype(np.float64),
                    res.arrays["singular_values"].astype(np.float64),
                )
            )
        d = _grassmann(group_bases, ip)
    else:
        if groups is not None:
            raise ParameterError("groups are used by the grassmann dissimilarity only")
        names, item_of = None, np.arange(m)
        d = dissimilarities(x, ip, kind=dissimilarity)
        zero = ip.sq_norms(x) == 0
        if zero.any() and dissimilarity == "sine":
            warnings.append(f"{int(zero.sum())} zero snapshot(s): at sine distance 1 from all")
            d[zero, :] = 1.0
            d[:, zero] = 1.0
            d[zero, zero] = 0.0
    n_items = d.shape[0]
    if max(ks) > n_items:
        raise ParameterError(
            f"{max(ks)} clusters for {n_items} {'groups' if names is not None else 'snapshots'}"
        )
    glob = pod(x, rule, mass=ip, method=_basis_method(n, m), rng=rng)
    n_glob = int(glob.rank["value"])
    rows, runs = [], {}
    # what a checkpoint needs besides the inner loop's state: the finished K and the stage
    outer = {"k_index": 0, "done": [], "stage": "kmedoids", "km": None}
    done, at = [], None
    if resume is not None:
        saved = resume["outer"]
        done, at = saved["done"], {k: v for k, v in resume.items() if k != "outer"}
        outer.update(k_index=saved["k_index"], done=list(done), stage=saved["stage"],
                     km=saved["km"])  # fmt: skip
        if saved["stage"] == "refine":
            set_rng_state(rng, saved["rng"])  # the k-medoids draws of this K are behind it

    def with_outer(event):
        inner = event.state
        if inner is not None:
            event = dataclasses.replace(event, state=lambda: {
                **inner(), "outer": {**copy.deepcopy(outer), "rng": rng_state(rng)}})  # fmt: skip
        return callback(event)

    cb = None if callback is None else with_outer
    for i, k in enumerate(ks):
        if i < len(done):  # finished before the checkpoint: rebuilt without iterating
            run = _one_k(x, d, k, item_of, rule, ip, rng, n_init, refine, max_iter, cb,
                         outer, finished=done[i])  # fmt: skip
        else:
            outer["k_index"] = i
            run = _one_k(x, d, k, item_of, rule, ip, rng, n_init, refine, max_iter, cb,
                         outer, resume=at if i == len(done) else None)  # fmt: skip
            outer["done"].append({"km": outer["km"], "refined": run["refined"]})
            outer["stage"], outer["km"] = "kmedoids", None
        sizes, ranks = run["sizes"], run["ranks"]
        eta = float(sum(s / m * r for s, r in zip(sizes, ranks, strict=True)) / n_glob)
        feasible = bool(all(r < s for s, r in zip(sizes, ranks, strict=True)))
        run.update(efficiency=eta, feasible=feasible)
        runs[k] = run
        rows.append(
            {
                "clusters": k,
                "efficiency": eta,
                "feasible": feasible,
                "sizes": sizes,
                "ranks": ranks,
                "objective": run["objective"],
            }
        )
    feas = [r for r in rows if r["feasible"]]
    pick = min(feas or rows, key=lambda r: (r["efficiency"], r["clusters"]))
    if not feas and len(ks) > 1:
        warnings.append(
            "no K gives a feasible clustering (every cluster must have more snapshots"
            " than its basis has modes); the smallest η was kept"
        )
    elif not feas:
        warnings.append(
            "the clustering is not feasible: a cluster has no more snapshots than "
            "its basis has modes"
        )
    k = pick["clusters"]
    run = runs[k]
    arrays = {}
    cl_rows = []
    for c, res in enumerate(run["results"]):
        arrays[f"basis/{c}"] = res.arrays["basis"]
        arrays[f"singular_values/{c}"] = res.arrays["singular_values"]
        pe = res.metrics["projection_error"]
        cl_rows.append(
            {
                "cluster": c,
                "snapshots": run["sizes"][c],
                "rank": run["ranks"][c],
                "medoid": int(run["medoid_items"][c]),
                "relative_frobenius_error": res.metrics["relative_frobenius_error"],
                "projection_error": {"mean": pe["mean"], "worst": pe["worst"]},
                "orthogonality_loss": res.metrics["orthogonality_loss"],
            }
        )
    arrays["labels"] = run["labels"]
    if names is None:
        arrays["medoids"] = np.ascontiguousarray(x[:, run["medoid_items"]])
    else:
        reps = [group_bases[i][0][:, 0] * group_bases[i][1][0] for i in run["medoid_items"]]
        arrays["medoids"] = np.ascontiguousarray(np.stack(reps, axis=1), dtype=wdt)
    gpe = glob.metrics["projection_error"]
    metrics = {
        "clusters": cl_rows,
        "efficiency": run["efficiency"],
        "feasible": run["feasible"],
        "chosen_k": int(k),
        "by_k": rows,
        "global": {
            "rank": n_glob,
            "relative_frobenius_error": glob.metrics["relative_frobenius_error"],
            "projection_error": {"mean": gpe["mean"], "worst": gpe["worst"]},
        },
        "objective": run["objective"],
    }
    rank = {
        "value": run["ranks"],
        "rule": rule.kind,
        "threshold": rule.value,
        "global": n_glob,
        "max_rank": int(min(n, m)),
        "clamped": False,
        "by_rule": glob.rank["by_rule"],
    }
    details = {
        "dissimilarity": dissimilarity,
        "n_init": int(n_init),
        "refine": bool(refine),
        "items": "groups" if names is not None else "snapshots",
        "restarts": run["restarts"],
        "inner_product": ip.describe(),
        "medoid_items": [int(i) for i in run["medoid_items"]],
        "criterion": "η(K) = Σ_k (|C_k|/m)·N_k / N_glob (rankwise's own); feasible iff "
        "N_k < |C_k| for every cluster",
    }
    if names is not None:
        details["groups"] = [str(v) for v in names]
    if refine:
        details["refine_history"] = run["refine_history"]
        details["refine_stop_reason"] = run["refine_stop"]
    return Result(
        arrays=arrays,
        method=f"k-medoids ({dissimilarity})" + (" + k-subspaces" if refine else ""),
        method_reason="local bases: one POD per cluster",
        metrics=metrics,
        details=details,
        history=run["history"],
        converged=run["converged"],
        stop_reason=run["stop_reason"],
        warnings=tuple(warnings),
        rank=rank,
    )


def _one_k(x, d, k, item_of, rule, ip, rng, n_init, refine, max_iter, callback, outer,
           resume=None, finished=None):  # fmt: skip
    """One K: k-medoids, a POD per cluster, the optional refinement. ``outer`` (the
    checkpoint's view of local_pod) follows the stage; ``resume`` continues an interrupted
    stage; ``finished`` ({"km", "refined"}) rebuilds a K done before a checkpoint."""
    stage = None if resume is None else outer["stage"]
    if finished is not None:
        km = finished["km"]
    else:
        if stage == "refine":
            km = outer["km"]
        else:
            km = kmedoids(d, k, n_init=n_init, rng=rng, max_iter=max_iter, callback=callback,
                          resume=resume)  # fmt: skip
        outer["stage"], outer["km"] = "refine", km
    labels = km["labels"][item_of]
    out = {
        "objective": km["objective"],
        "restarts": km["restarts"],
        "history": km["history"],
        "converged": km["converged"],
        "stop_reason": km["stop_reason"],
        "medoid_items": km["medoids"],
    }
    results = [_cluster_pod(x, np.flatnonzero(labels == c), rule, ip, rng) for c in range(k)]
    out["refined"] = None
    if refine:
        ranks = [int(r.rank["value"]) for r in results]
        if finished is not None:
            got = finished["refined"]
            labels, hist, stop = got["labels"].copy(), got["history"], got["stop"]
        else:
            again = resume if stage == "refine" else None
            labels, loop, init_obj = _refine(x, labels, ranks, ip, rng, max_iter, callback,
                                             resume=again)  # fmt: skip
            hist = [{"iteration": 0, "objective": init_obj}] + loop.history
            stop = loop.stop_reason
        out["refined"] = {"labels": labels.copy(), "history": hist, "stop": stop}
        out["refine_history"], out["refine_stop"] = hist, stop
        keep = [c for c in range(k) if np.any(labels == c)]
        if len(keep) < k:  # a cluster emptied: renumber the rest
            remap = np.full(k, -1)
            remap[keep] = np.arange(len(keep))
            labels = remap[labels]
            out["medoid_items"] = out["medoid_items"][keep]
        results = [
            _cluster_pod(x, np.flatnonzero(labels == c), rule, ip, rng) for c in range(len(keep))
        ]
    out["labels"] = labels.astype(np.int64)
    out["results"] = results
    out["sizes"] = [int(np.sum(labels == c)) for c in range(len(results))]
    out["ranks"] = [int(r.rank["value"]) for r in results]
    return out


def _grassmann(bases, ip) -> np.ndarray:
    """Chordal distance between subspaces of possibly different dimensions."""
    g = len(bases)
    d = np.zeros((g, g))
    for i in range(g):
        vi = bases[i][0]
        mvi = ip.apply(vi)
        for j in range(i + 1, g):
            vj = bases[j][0]
            c = mvi.T @ vj
            val = max(vi.shape[1], vj.shape[1]) - float(np.sum(c * c))
            d[i, j] = d[j, i] = math.sqrt(max(val, 0.0))
    return d


def efficiency(sizes, ranks, global_rank: int) -> float:
    """η = Σ_k (|C_k|/m)·N_k / N_glob."""
    m = float(sum(sizes))
    return float(sum(s / m * r for s, r in zip(sizes, ranks, strict=True)) / global_rank)


__all__ = ["local_pod", "kmedoids", "efficiency", "DISSIMILARITIES"]
