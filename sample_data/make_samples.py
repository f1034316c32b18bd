"""Regenerate rankwise's bundled sample data.

    python sample_data/make_samples.py [OUTDIR]      # default: this file's folder

Every file is built from seeded ``numpy.random.default_rng`` streams with numpy, scipy, h5py
and zarr directly (never with rankwise itself), so the samples are an independent reference.
Running the script twice on the same machine gives the same bytes: HDF5 datasets are written
with ``track_times=False``, the NPZ is zipped by hand with a fixed timestamp, and no attribute
holds a date. Across platforms the arrays agree to rounding (BLAS, libm).

Each sample has a pure ``*_data()`` function returning its arrays and a ``make_*(outdir)``
function writing the file; ``main(outdir)`` writes them all. Physical sanity (decay, maximum
principle, agreement with a closed form, planted rank) is asserted while the data is built.
"""

from __future__ import annotations

import argparse
import io
import shutil
import sys
import zipfile
from pathlib import Path

import h5py
import numcodecs
import numpy as np
import scipy.io
import scipy.sparse as sp
import scipy.sparse.linalg as spla
import zarr

HERE = Path(__file__).resolve().parent

# One fixed seed per sample, so changing one sample never changes another.
SEED_HEAT = 20240611
SEED_BURGERS = 20240612
SEED_RATINGS = 20240613
SEED_TENSOR = 20240614
SEED_SENSORS = 20240615
SEED_CLIMATE = 20240616
SEED_SPECTRA = 20240617

GZIP_LEVEL = 6
ZSTD = zarr.codecs.ZstdCodec(level=5)
# zarr-python 2's historical default compressor: what real v2 stores in the wild use.
BLOSC_V2 = numcodecs.Blosc(cname="lz4", clevel=5, shuffle=numcodecs.Blosc.SHUFFLE)
# Never skip a chunk equal to the fill value: rankwise treats a missing chunk as an error.
ZARR_CONFIG = {"write_empty_chunks": True}


# --------------------------------------------------------------------------------------------
# small writers


def _h5_dataset(group, name, data, *, chunks=None, compress=False, attrs=None):
    kwargs = {"track_times": False}
    if compress:
        kwargs.update(
            chunks=chunks or True, compression="gzip", compression_opts=GZIP_LEVEL, shuffle=True
        )
    elif chunks is not None:
        kwargs["chunks"] = chunks
    dset = group.create_dataset(name, data=data, **kwargs)
    for key, value in (attrs or {}).items():
        dset.attrs[key] = value
    return dset


def _h5_coo_group(parent, name, matrix, *, attrs=None, compress=False):
    """Write a scipy sparse matrix as a COO group: row, col (int64), data (float64), shape."""
    coo = sp.coo_array(matrix)
    coo.sum_duplicates()  # canonical: sorted by (row, col), no duplicates
    group = parent.create_group(name)
    n = coo.nnz
    chunks = (min(n, 1 << 16),) if compress else None
    _h5_dataset(group, "row", coo.row.astype(np.int64), chunks=chunks, compress=compress)
    _h5_dataset(group, "col", coo.col.astype(np.int64), chunks=chunks, compress=compress)
    _h5_dataset(group, "data", coo.data.astype(np.float64), chunks=chunks, compress=compress)
    _h5_dataset(group, "shape", np.asarray(coo.shape, dtype=np.int64))
    for key, value in (attrs or {}).items():
        group.attrs[key] = value
    return group


def _fresh_store(path: Path) -> Path:
    """Remove a previous copy of a Zarr store directory (only that directory)."""
    if path.is_dir():
        shutil.rmtree(path)
    elif path.exists():
        path.unlink()
    return path


def _zarr_array(group, name, data, *, chunks, dimension_names, attrs=None):
    return group.create_array(
        name,
        data=data,
        chunks=chunks,
        compressors=ZSTD,
        dimension_names=dimension_names,
        attributes=attrs or {},
        config=ZARR_CONFIG,
    )


def _write_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """A standard (deflated) NPZ whose bytes do not depend on the clock or the OS."""
    with zipfile.ZipFile(path, "w") as zf:
        for name, arr in arrays.items():
            buf = io.BytesIO()
            np.lib.format.write_array(buf, np.ascontiguousarray(arr), allow_pickle=False)
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            info.create_system = 3
            info.external_attr = 0o644 << 16
            zf.writestr(info, buf.getvalue(), compresslevel=GZIP_LEVEL)


# --------------------------------------------------------------------------------------------
# 1 + 4. heat.h5 and mass.mtx: 1-D heat equation, P1 finite elements on a graded mesh

HEAT_KAPPA = 0.1
HEAT_DT_OUT = 1.0 / 60.0  # time between stored snapshots
HEAT_SUBSTEPS = 5  # implicit-Euler steps per stored snapshot
HEAT_NT = 120
HEAT_NDOF = 300
HEAT_SOURCE = {"amplitude": 4.0, "center": 0.7, "width": 0.03}


def _p1_matrices(nodes: np.ndarray) -> tuple[sp.csr_array, sp.csr_array]:
    """Consistent P1 mass and stiffness matrices on the interior nodes (Dirichlet removed)."""
    h = np.diff(nodes)
    m_diag = (h[:-1] + h[1:]) / 3.0
    m_off = h[1:-1] / 6.0
    k_diag = 1.0 / h[:-1] + 1.0 / h[1:]
    k_off = -1.0 / h[1:-1]
    mass = sp.diags_array([m_off, m_diag, m_off], offsets=[-1, 0, 1], format="csr")
    stiff = sp.diags_array([k_off, k_diag, k_off], offsets=[-1, 0, 1], format="csr")
    return mass, stiff


def heat_data() -> dict[str, object]:
    """Snapshots (dofs x times), dof coordinates, times, consistent mass matrix (CSR)."""
    rng = np.random.default_rng(SEED_HEAT)
    n_nodes = HEAT_NDOF + 2
    xi = np.linspace(0.0, 1.0, n_nodes)
    beta = 0.6  # blend of uniform and Chebyshev grading: finer near both walls
    nodes = (1.0 - beta) * xi + beta * 0.5 * (1.0 - np.cos(np.pi * xi))
    h = np.diff(nodes)
    jitter = rng.uniform(-0.25, 0.25, size=HEAT_NDOF) * np.minimum(h[:-1], h[1:])
    nodes[1:-1] += jitter  # an unstructured-looking mesh, still sorted
    assert np.all(np.diff(nodes) > 0)
    x = nodes[1:-1]

    mass, stiff = _p1_matrices(nodes)
    # 1^T M 1 = integral of (sum of interior hats)^2 = 1 minus 2h/3 on each end element
    h = np.diff(nodes)
    assert abs(mass.sum() - (1.0 - 2 * h[0] / 3 - 2 * h[-1] / 3)) < 1e-12
    assert abs(mass - mass.T).max() == 0.0

    u0 = np.sin(np.pi * x) + 0.5 * np.sin(3 * np.pi * x) + 0.25 * np.sin(8 * np.pi * x)
    src = HEAT_SOURCE
    f = src["amplitude"] * np.exp(-(((x - src["center"]) / src["width"]) ** 2))
    load = mass @ f
    u_inf = spla.spsolve(stiff.tocsc(), load) / HEAT_KAPPA

    dt = HEAT_DT_OUT / HEAT_SUBSTEPS
    lu = spla.splu((mass + dt * HEAT_KAPPA * stiff).tocsc())
    snaps = np.empty((HEAT_NDOF, HEAT_NT))
    u = u0.copy()
    snaps[:, 0] = u
    for k in range(1, HEAT_NT):
        for _ in range(HEAT_SUBSTEPS):
            u = lu.solve(mass @ u + dt * load)
        snaps[:, k] = u
    times = HEAT_DT_OUT * np.arange(HEAT_NT)

    # Sanity: finite; the transient decays monotonically in the M-norm towards the steady state;
    # the steady state is positive (source >= 0) and the solution stays bounded.
    assert np.all(np.isfinite(snaps))
    dev = snaps - u_inf[:, None]
    energy = np.sqrt(np.einsum("it,it->t", dev, mass @ dev))
    assert np.all(np.diff(energy) < 0), "heat transient must decay"
    assert energy[-1] < 0.2 * energy[0]
    assert u_inf.min() > 0
    assert np.abs(snaps).max() <= np.abs(u0).max() + u_inf.max()
    return {"snapshots": snaps, "x": x, "times": times, "mass": mass, "u_inf": u_inf}


def make_heat(outdir: Path) -> Path:
    d = heat_data()
    path = Path(outdir) / "heat.h5"
    n = d["snapshots"].shape[0]
    with h5py.File(path, "w") as f:
        f.attrs["description"] = (
            "1-D heat equation u_t = kappa u_xx on [0,1], u(0)=u(1)=0, P1 finite elements on a "
            "graded non-uniform mesh, implicit Euler; initial modes sin(pi x), sin(3 pi x), "
            "sin(8 pi x) plus a steady Gaussian source at x=0.7"
        )
        f.attrs["equation"] = "M du/dt + kappa K u = M f"
        _h5_dataset(
            f,
            "snapshots",
            d["snapshots"],
            chunks=(n, 40),
            compress=True,
            attrs={
                "layout": "dofs x snapshots (one column per time)",
                "kappa": HEAT_KAPPA,
                "dt": HEAT_DT_OUT,
                "solver_dt": HEAT_DT_OUT / HEAT_SUBSTEPS,
                "scheme": "P1 FEM in space, implicit Euler in time, consistent mass",
                "source_amplitude": HEAT_SOURCE["amplitude"],
                "source_center": HEAT_SOURCE["center"],
                "source_width": HEAT_SOURCE["width"],
            },
        )
        mesh = f.create_group("mesh")
        _h5_dataset(
            mesh,
            "x",
            d["x"],
            attrs={
                "description": "coordinates of the dofs (interior nodes); the Dirichlet nodes "
                "x=0 and x=1 are not dofs",
                "n_elements": n + 1,
            },
        )
        _h5_dataset(f, "times", d["times"], attrs={"dt": HEAT_DT_OUT, "units": "s"})
        _h5_coo_group(
            f,
            "mass",
            d["mass"],
            attrs={
                "description": "consistent P1 mass matrix on the dofs, symmetric positive "
                "definite, both triangles stored (COO)",
                "format": "coo",
            },
        )
    return path


def make_mass(outdir: Path) -> Path:
    mass = heat_data()["mass"]
    path = Path(outdir) / "mass.mtx"
    lower = sp.coo_array(sp.tril(mass))
    lower.sum_duplicates()
    scipy.io.mmwrite(
        path,
        lower,
        comment=(
            " rankwise sample: consistent P1 finite-element mass matrix of the heat.h5 mesh "
            f"({mass.shape[0]} dofs), symmetric positive definite; equal to heat.h5:/mass"
        ),
        field="real",
        symmetry="symmetric",
    )
    return path


# --------------------------------------------------------------------------------------------
# 2. burgers.zarr: viscous Burgers, periodic, pseudo-spectral, several viscosities

BURGERS_N = 512  # stored grid
BURGERS_OVERSAMPLE = 2  # solved on a 2x finer grid, so the smallest nu is fully resolved
BURGERS_NUS = (0.02, 0.04, 0.08, 0.16)
BURGERS_PER_NU = 50
BURGERS_T_END = 3.0
BURGERS_DT = 1e-3
BURGERS_MEAN = 0.5  # mean velocity: the shocks travel


def _burgers_u0(x: np.ndarray) -> np.ndarray:
    return BURGERS_MEAN + 0.8 * np.sin(x) + 0.4 * np.sin(2 * x + 1.0) + 0.2 * np.cos(3 * x)


def _burgers_w0_antiderivative(x: np.ndarray) -> np.ndarray:
    """Antiderivative (from 0) of u0 - mean: periodic because u0 - mean has zero mean."""
    return (
        0.8 * (1.0 - np.cos(x))
        + 0.2 * (np.cos(1.0) - np.cos(2 * x + 1.0))
        + (0.2 / 3.0) * np.sin(3 * x)
    )


def _burgers_cole_hopf(x: np.ndarray, t: float, nu: float) -> np.ndarray:
    """Exact solution via Cole-Hopf and Galilean invariance (valid while exp() stays in range)."""
    n = x.size
    k = np.fft.rfftfreq(n, d=1.0 / n)
    w_int = _burgers_w0_antiderivative(x)
    phi0 = np.exp(-(w_int - w_int.min()) / (2 * nu))
    phat = np.fft.rfft(phi0) * np.exp(-nu * k**2 * t) * np.exp(-1j * k * BURGERS_MEAN * t)
    phi = np.fft.irfft(phat, n)
    phi_x = np.fft.irfft(1j * k * phat, n)
    return BURGERS_MEAN - 2 * nu * phi_x / phi


def _burgers_run(nu: float, x: np.ndarray, out_times: np.ndarray) -> np.ndarray:
    """Integrating-factor RK4, 2/3-rule dealiasing: u_t + (u^2/2)_x = nu u_xx on the grid x."""
    n = x.size
    k = np.fft.rfftfreq(n, d=1.0 / n)
    dealias = k < n / 3.0
    dt = BURGERS_DT
    e_half = np.exp(-nu * k**2 * dt / 2)
    e_full = e_half**2

    def nonlinear(vhat):
        u = np.fft.irfft(vhat, n)
        return -0.5j * k * dealias * np.fft.rfft(u * u)

    vhat = np.fft.rfft(_burgers_u0(x)) * dealias
    steps = np.rint(out_times / dt).astype(int)
    assert np.allclose(steps * dt, out_times)
    out = np.empty((n, out_times.size))
    step = 0
    for j, target in enumerate(steps):
        while step < target:
            a = nonlinear(vhat)
            b = nonlinear(e_half * (vhat + 0.5 * dt * a))
            c = nonlinear(e_half * vhat + 0.5 * dt * b)
            d = nonlinear(e_full * vhat + dt * e_half * c)
            vhat = e_full * vhat + dt / 6 * (e_full * a + 2 * e_half * (b + c) + d)
            step += 1
        # resolved: the last retained third of the spectrum carries nothing
        tail = np.abs(vhat[(k > n / 4) & dealias]).max() / np.abs(vhat).max()
        assert tail < 1e-10, f"Burgers nu={nu} under-resolved (tail {tail:.1e})"
        out[:, j] = np.fft.irfft(vhat, n)
    return out


def burgers_data() -> dict[str, np.ndarray]:
    x = 2 * np.pi * np.arange(BURGERS_N) / BURGERS_N
    fine = 2 * np.pi * np.arange(BURGERS_N * BURGERS_OVERSAMPLE) / (BURGERS_N * BURGERS_OVERSAMPLE)
    u0 = _burgers_u0(x)
    out_times = BURGERS_T_END * np.arange(1, BURGERS_PER_NU + 1) / BURGERS_PER_NU
    blocks, nus, times = [], [], []
    for nu in BURGERS_NUS:
        block = _burgers_run(nu, fine, out_times)[::BURGERS_OVERSAMPLE]
        # maximum principle: the solution stays within the range of the initial data
        assert np.all(np.isfinite(block))
        assert block.max() <= u0.max() + 1e-6 and block.min() >= u0.min() - 1e-6
        # compare with the closed form where Cole-Hopf is numerically well conditioned
        # (exp(-W/2nu) spans e^(range W / 2 nu): ~1e11 at nu = 0.04, so ~1e-6 is its accuracy)
        if nu >= 0.04:
            for j in (BURGERS_PER_NU // 4, BURGERS_PER_NU - 1):
                exact = _burgers_cole_hopf(x, out_times[j], nu)
                assert np.abs(block[:, j] - exact).max() < 1e-6, "Burgers vs Cole-Hopf"
        blocks.append(block)
        nus.append(np.full(BURGERS_PER_NU, nu))
        times.append(out_times)
    snaps = np.hstack(blocks)
    # the dissipation is visible: total variation decreases with time for each viscosity
    tv = np.abs(np.diff(snaps, axis=0, append=snaps[:1])).sum(axis=0)
    tv = tv.reshape(len(BURGERS_NUS), BURGERS_PER_NU)
    assert np.all(np.diff(tv, axis=1) <= 1e-9)
    return {"snapshots": snaps, "nu": np.concatenate(nus), "t": np.concatenate(times), "x": x}


def make_burgers(outdir: Path) -> Path:
    d = burgers_data()
    path = _fresh_store(Path(outdir) / "burgers.zarr")
    n, ns = d["snapshots"].shape
    group = zarr.create_group(
        path,
        zarr_format=3,
        attributes={
            "description": "viscous Burgers u_t + u u_x = nu u_xx on [0, 2 pi), periodic; "
            "u0 = 0.5 + 0.8 sin x + 0.4 sin(2x+1) + 0.2 cos 3x; pseudo-spectral "
            "(2/3 dealiasing) with integrating-factor RK4; a parameter study over nu",
            "nu_values": list(BURGERS_NUS),
            "snapshots_per_nu": BURGERS_PER_NU,
            "dt": BURGERS_DT,
            "t_end": BURGERS_T_END,
        },
    )
    _zarr_array(
        group,
        "snapshots",
        d["snapshots"],
        chunks=(n, ns // 2),
        dimension_names=["x", "snapshot"],
        attrs={"layout": "dofs x snapshots; columns grouped by nu, then time"},
    )
    _zarr_array(
        group,
        "nu",
        d["nu"],
        chunks=(ns,),
        dimension_names=["snapshot"],
        attrs={"description": "viscosity of each snapshot"},
    )
    _zarr_array(
        group,
        "t",
        d["t"],
        chunks=(ns,),
        dimension_names=["snapshot"],
        attrs={"description": "time of each snapshot"},
    )
    _zarr_array(
        group,
        "x",
        d["x"],
        chunks=(n,),
        dimension_names=["x"],
        attrs={"description": "grid points, x_j = 2 pi j / 512"},
    )
    return path


# --------------------------------------------------------------------------------------------
# 3. ratings.mtx: sparse users x items ratings from a planted low-rank preference model

RATINGS_SHAPE = (900, 1600)
RATINGS_RANK = 8
RATINGS_DENSITY = 0.03


def ratings_data() -> dict[str, object]:
    rng = np.random.default_rng(SEED_RATINGS)
    m, n = RATINGS_SHAPE
    r = RATINGS_RANK
    # who rates what: Zipf-like item popularity, log-normal user activity
    popularity = 1.0 / np.arange(1, n + 1) ** 0.9
    popularity = popularity[rng.permutation(n)]
    popularity /= popularity.sum()
    activity = rng.lognormal(0.0, 0.8, size=m)
    target = RATINGS_DENSITY * m * n
    counts = np.clip(np.rint(activity / activity.sum() * target), 5, n // 3).astype(int)
    rows, cols = [], []
    for u in range(m):
        items = rng.choice(n, size=counts[u], replace=False, p=popularity)
        rows.append(np.full(items.size, u))
        cols.append(items)
    rows = np.concatenate(rows)
    cols = np.concatenate(cols)
    # every item gets at least 3 ratings (the catalogue only lists rated items)
    per_item = np.bincount(cols, minlength=n)
    extra_r, extra_c = [], []
    for item in np.flatnonzero(per_item < 3):
        have = set(rows[cols == item].tolist())
        pool = np.setdiff1d(np.arange(m), np.fromiter(have, dtype=int, count=len(have)))
        users = rng.choice(pool, size=3 - per_item[item], replace=False)
        extra_r.append(users)
        extra_c.append(np.full(users.size, item))
    if extra_r:
        rows = np.concatenate([rows, *extra_r])
        cols = np.concatenate([cols, *extra_c])

    # what they think: global mean + user/item biases + rank-r taste + noise
    user_f = rng.normal(0.0, 1.0, size=(m, r)) / np.sqrt(r)
    item_f = rng.normal(0.0, 1.0, size=(n, r))
    user_b = rng.normal(0.0, 0.35, size=m)
    item_b = rng.normal(0.0, 0.45, size=n) + 0.3 * (popularity / popularity.max()) ** 0.25
    taste = np.einsum("ij,ij->i", user_f[rows], item_f[cols])
    score = 3.4 + user_b[rows] + item_b[cols] + 0.9 * taste
    noisy = score + rng.normal(0.0, 0.5, size=score.size)
    values = np.clip(np.rint(noisy), 1, 5).astype(np.int64)

    mat = sp.coo_array((values, (rows, cols)), shape=(m, n))
    mat.sum_duplicates()
    assert mat.nnz == rows.size, "duplicate (user, item) pairs"
    assert mat.data.min() >= 1 and mat.data.max() <= 5
    assert np.bincount(mat.col, minlength=n).min() >= 3
    assert np.bincount(mat.row, minlength=m).min() >= 5
    hist = np.bincount(mat.data, minlength=6)[1:]
    assert np.all(hist > 0.02 * mat.nnz), f"degenerate rating histogram {hist}"
    return {
        "matrix": mat,
        "user_factors": user_f,
        "item_factors": item_f,
        "user_bias": user_b,
        "item_bias": item_b,
    }


def make_ratings(outdir: Path) -> Path:
    mat = ratings_data()["matrix"]
    m, n = mat.shape
    path = Path(outdir) / "ratings.mtx"
    scipy.io.mmwrite(
        path,
        mat,
        comment=(
            f" rankwise sample: {m} users x {n} items, star ratings 1-5 "
            f"({mat.nnz} observed, {100 * mat.nnz / (m * n):.1f}% dense); planted model "
            f"3.4 + user bias + item bias + rank-{RATINGS_RANK} taste + N(0, 0.5^2), rounded "
            "and clipped; Zipf item popularity, log-normal user activity"
        ),
        field="integer",
        symmetry="general",
    )
    return path


# --------------------------------------------------------------------------------------------
# 5. tensor.zarr: a smooth 3-way field of low Tucker/TT rank, float32

TENSOR_SHAPE = (40, 30, 24)
TENSOR_NOISE = 1e-3


def tensor_data() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(SEED_TENSOR)
    x, y, z = (np.linspace(0.0, 1.0, s) for s in TENSOR_SHAPE)
    X, Y, Z = np.meshgrid(x, y, z, indexing="ij")
    clean = (
        np.exp(-2 * X) * np.cos(np.pi * Y) * (1 + Z)
        + 0.5 * np.sin(2 * np.pi * X) * np.exp(-((Y - 0.5) ** 2) / 0.1) * Z**2
        + 0.3 * X * Y * np.cos(3 * Z)
        + 1.0 / (1.0 + X + 2 * Y + 3 * Z)  # not separable, but numerically low rank
    )
    field = (clean + TENSOR_NOISE * rng.standard_normal(TENSOR_SHAPE)).astype(np.float32)
    # low multilinear rank: the 9th singular value of every unfolding is below 1e-3 of the 1st
    for mode in range(3):
        unf = np.moveaxis(clean, mode, 0).reshape(TENSOR_SHAPE[mode], -1)
        s = np.linalg.svd(unf, compute_uv=False)
        assert s[8] < 1e-3 * s[0], f"mode-{mode} rank is not low"
    assert np.abs(field - clean).max() < 6 * TENSOR_NOISE
    return {"field": field, "clean": clean}


def make_tensor(outdir: Path) -> Path:
    field = tensor_data()["field"]
    path = _fresh_store(Path(outdir) / "tensor.zarr")
    group = zarr.create_group(
        path,
        zarr_format=3,
        attributes={
            "description": "samples of f(x,y,z) = exp(-2x) cos(pi y) (1+z) "
            "+ 0.5 sin(2 pi x) exp(-(y-0.5)^2/0.1) z^2 + 0.3 x y cos(3z) + 1/(1+x+2y+3z) "
            "on a uniform grid of [0,1]^3, plus N(0, 1e-3^2) noise",
        },
    )
    _zarr_array(
        group,
        "field",
        field,
        chunks=(TENSOR_SHAPE[0] // 2, *TENSOR_SHAPE[1:]),
        dimension_names=["x", "y", "z"],
        attrs={
            "grid": "x = linspace(0,1,40), y = linspace(0,1,30), z = linspace(0,1,24)",
            "noise_std": TENSOR_NOISE,
        },
    )
    return path


# --------------------------------------------------------------------------------------------
# 6. sensors_v2.zarr: a Zarr v2 array at the store root, temperature sensors x hours

SENSORS_GRID = (8, 8)
SENSORS_HOURS = 720  # 30 days, hourly
SENSORS_DAY0 = 91  # 1 April: the seasonal warming of spring is visible


def sensors_data() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(SEED_SENSORS)
    gx, gy = np.meshgrid(*(np.linspace(0.0, 1.0, s) for s in SENSORS_GRID), indexing="ij")
    px, py = gx.ravel(), gy.ravel()
    ns = px.size
    hours = np.arange(SENSORS_HOURS, dtype=float)
    day_of_year = SENSORS_DAY0 + hours / 24.0

    # spatial patterns: urban heat island at the centre, elevation gradient, a coastline west
    urban = np.exp(-((px - 0.55) ** 2 + (py - 0.45) ** 2) / 0.05)
    elevation = 0.6 * py + 0.15 * rng.standard_normal(ns)
    coast = np.exp(-px / 0.25)

    seasonal = 11.0 - 9.0 * np.cos(2 * np.pi * (day_of_year - 20) / 365.25)
    daily = np.cos(2 * np.pi * (hours - 15.0) / 24.0)  # warmest at 3 pm
    night = np.cos(2 * np.pi * (hours - 3.0) / 24.0)
    # synoptic weather: a smoothed AR(1) anomaly, and a front sweeping west to east
    weather = np.zeros(SENSORS_HOURS)
    for t in range(1, SENSORS_HOURS):
        weather[t] = 0.985 * weather[t - 1] + 0.25 * rng.standard_normal()
    front_t = np.exp(-(((hours - 400.0) / 30.0) ** 2))

    temp = (
        seasonal[None, :]
        + 2.0 * urban[:, None]
        - 4.0 * elevation[:, None]
        + (5.0 - 2.5 * coast)[:, None] * daily[None, :]
        + 1.2 * urban[:, None] * np.maximum(night, 0.0)[None, :]
        + weather[None, :] * (1.0 - 0.4 * coast)[:, None]
        - 3.0 * front_t[None, :] * (0.5 + px)[:, None]
        + 0.3 * rng.standard_normal((ns, SENSORS_HOURS))
    )
    assert np.all(np.isfinite(temp)) and -20 < temp.min() and temp.max() < 40
    return {"temperature": temp, "sensor_x": px, "sensor_y": py}


def make_sensors(outdir: Path) -> Path:
    d = sensors_data()
    temp = d["temperature"]
    path = _fresh_store(Path(outdir) / "sensors_v2.zarr")
    zarr.create_array(
        path,
        data=temp,
        chunks=(temp.shape[0], temp.shape[1] // 2),
        zarr_format=2,
        compressors=BLOSC_V2,
        attributes={
            "_ARRAY_DIMENSIONS": ["sensor", "hour"],
            "description": "air temperature from 64 sensors on an 8 x 8 grid, hourly for 30 "
            "days from 1 April: seasonal warming, daily cycle damped near the west coast, "
            "urban heat island, elevation lapse, AR(1) weather, a passing front, sensor noise",
            "units": "degC",
            "sensor_x": [round(float(v), 6) for v in d["sensor_x"]],
            "sensor_y": [round(float(v), 6) for v in d["sensor_y"]],
        },
        config=ZARR_CONFIG,
    )
    return path


# --------------------------------------------------------------------------------------------
# 7. climate.npz: monthly temperature on a coarse global grid, time x gridpoints

CLIMATE_NLAT, CLIMATE_NLON = 16, 32
CLIMATE_MONTHS = 240


def climate_data() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(SEED_CLIMATE)
    dlat, dlon = 180.0 / CLIMATE_NLAT, 360.0 / CLIMATE_NLON
    lat1 = -90.0 + dlat * (np.arange(CLIMATE_NLAT) + 0.5)
    lon1 = dlon * np.arange(CLIMATE_NLON)
    lat2, lon2 = np.meshgrid(lat1, lon1, indexing="ij")
    lat, lon = lat2.ravel(), lon2.ravel()
    phi, lam = np.deg2rad(lat), np.deg2rad(lon)
    months = np.arange(CLIMATE_MONTHS)
    years = months / 12.0

    # "continents": a smooth land fraction, larger in the north
    land = 1 / (1 + np.exp(-4 * (np.sin(lam) * np.cos(phi) + 0.6 * np.sin(phi) - 0.2)))
    clim = 31.0 * np.cos(phi) ** 1.5 - 4.0 - 12.0 * land * np.sin(phi) ** 2
    clim -= 25.0 * (phi < 0) * np.sin(phi) ** 6  # Antarctica
    seas_amp = (3.0 + 14.0 * land) * np.abs(np.sin(phi)) ** 1.2 * np.sign(phi)
    seas_t = -np.cos(2 * np.pi * (months - 0.5) / 12.0)  # coldest in January (north)
    semi_t = np.cos(4 * np.pi * months / 12.0)
    enso_pat = np.exp(-((lat / 15.0) ** 2) - ((lon - 230.0) / 40.0) ** 2)
    enso_pat -= 0.3 * np.exp(-((lat / 20.0) ** 2) - ((lon - 140.0) / 30.0) ** 2)
    enso = np.zeros(CLIMATE_MONTHS + 60)  # AR(2) index with a 5-year spin-up
    for t in range(2, enso.size):
        enso[t] = 1.6 * enso[t - 1] - 0.68 * enso[t - 2] + 0.25 * rng.standard_normal()
    enso = enso[60:] / enso[60:].std()
    trend_pat = 1.0 + 1.5 * np.sin(phi) ** 2 * (phi > 0)  # polar amplification (north)
    nao_pat = np.sin(2 * phi) * np.cos(lam - 0.5) * (phi > 0)
    nao = rng.standard_normal(CLIMATE_MONTHS)

    temperature = (
        clim[None, :]
        + seas_t[:, None] * seas_amp[None, :]
        + 0.8 * semi_t[:, None] * land[None, :] * np.abs(np.sin(phi))[None, :]
        + 0.9 * enso[:, None] * enso_pat[None, :]
        + 0.025 * years[:, None] * trend_pat[None, :]
        + 1.5 * nao[:, None] * nao_pat[None, :]
        + (0.4 + 0.8 * np.abs(np.sin(phi)))[None, :]
        * rng.standard_normal((CLIMATE_MONTHS, lat.size))
    )
    assert np.all(np.isfinite(temperature))
    assert -60 < temperature.min() and temperature.max() < 45
    # hemispheres are out of phase: July minus January has opposite signs north and south
    jul_jan = temperature[6::12].mean(0) - temperature[0::12].mean(0)
    assert jul_jan[lat > 45].mean() > 5 and jul_jan[lat < -45].mean() < -2
    return {"temperature": temperature, "lat": lat, "lon": lon}


def make_climate(outdir: Path) -> Path:
    path = Path(outdir) / "climate.npz"
    _write_npz(path, climate_data())
    return path


# --------------------------------------------------------------------------------------------
# 8. spectra.npy: nonnegative mixtures of Gaussian-peak endmember spectra

SPECTRA_SAMPLES, SPECTRA_BANDS, SPECTRA_ENDMEMBERS = 300, 200, 5


def spectra_data() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(SEED_SPECTRA)
    wavelength = np.linspace(400.0, 1000.0, SPECTRA_BANDS)  # nm
    endmembers = np.zeros((SPECTRA_ENDMEMBERS, SPECTRA_BANDS))
    for e in range(SPECTRA_ENDMEMBERS):
        for _ in range(rng.integers(2, 5)):
            center = rng.uniform(430.0, 970.0)
            width = rng.uniform(12.0, 70.0)
            height = rng.uniform(0.3, 1.0)
            endmembers[e] += height * np.exp(-0.5 * ((wavelength - center) / width) ** 2)
        endmembers[e] /= endmembers[e].max()
    abundances = rng.dirichlet(np.full(SPECTRA_ENDMEMBERS, 0.4), size=SPECTRA_SAMPLES)
    abundances *= rng.uniform(0.5, 1.5, size=(SPECTRA_SAMPLES, 1))  # illumination
    noise = np.abs(rng.normal(0.0, 0.005, size=(SPECTRA_SAMPLES, SPECTRA_BANDS)))
    spectra = abundances @ endmembers + noise
    assert spectra.min() >= 0.0
    s = np.linalg.svd(spectra, compute_uv=False)
    assert s[SPECTRA_ENDMEMBERS] < 0.05 * s[SPECTRA_ENDMEMBERS - 1], "planted rank not visible"
    return {
        "spectra": spectra,
        "wavelength": wavelength,
        "endmembers": endmembers,
        "abundances": abundances,
    }


def make_spectra(outdir: Path) -> Path:
    path = Path(outdir) / "spectra.npy"
    np.save(path, spectra_data()["spectra"], allow_pickle=False)
    return path


# --------------------------------------------------------------------------------------------
# 9. heat_coo.h5: 2-D variable-coefficient diffusion operator as an HDF5 COO group

COO_GRID = 45  # interior points per side: 2025 unknowns


def heat_coo_data() -> dict[str, object]:
    n = COO_GRID
    h = 1.0 / (n + 1)

    def conductivity(x, y):
        return (
            1.0
            + 0.5 * np.sin(2 * np.pi * x) * np.cos(2 * np.pi * y)
            + 3.0 * np.exp(-((x - 0.3) ** 2 + (y - 0.6) ** 2) / 0.01)
        )

    idx = np.arange(n * n).reshape(n, n)  # idx[i, j]: x_i, y_j, row-major
    coords = h * np.arange(1, n + 1)
    xi, yj = np.meshgrid(coords, coords, indexing="ij")
    # face conductivities (cell-centred finite volumes), Dirichlet u = 0 outside
    a_e = conductivity(xi + h / 2, yj)
    a_w = conductivity(xi - h / 2, yj)
    a_n = conductivity(xi, yj + h / 2)
    a_s = conductivity(xi, yj - h / 2)
    diag = (a_e + a_w + a_n + a_s) / h**2
    rows = [idx.ravel()]
    cols = [idx.ravel()]
    vals = [diag.ravel()]
    for shift, faces in (((1, 0), a_e), ((0, 1), a_n)):
        di, dj = shift
        src = idx[: n - di, : n - dj].ravel()
        dst = idx[di:, dj:].ravel()
        w = -faces[: n - di, : n - dj].ravel() / h**2
        rows += [src, dst]
        cols += [dst, src]
        vals += [w, w]
    mat = sp.coo_array(
        (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(n * n,) * 2
    ).tocsr()
    assert abs(mat - mat.T).max() == 0.0
    row_sums = mat.sum(axis=1)
    assert row_sums.min() >= -1e-9 * diag.max()  # weakly diagonally dominant + Dirichlet: SPD
    assert mat.nnz == 5 * n * n - 4 * n
    return {"matrix": mat}


def make_heat_coo(outdir: Path) -> Path:
    mat = heat_coo_data()["matrix"]
    path = Path(outdir) / "heat_coo.h5"
    with h5py.File(path, "w") as f:
        f.attrs["description"] = (
            "stiffness matrix of -div(a grad u) on the unit square, 5-point finite volumes on a "
            f"{COO_GRID} x {COO_GRID} interior grid, Dirichlet u=0, smooth conductivity a with a "
            "high-conductivity inclusion; symmetric positive definite"
        )
        _h5_coo_group(
            f,
            "matrix",
            mat,
            compress=True,
            attrs={
                "format": "coo",
                "description": "COO triplets sorted by (row, col), both triangles stored; "
                "unknown k = i * 45 + j for grid point (x_i, y_j)",
            },
        )
    return path


# --------------------------------------------------------------------------------------------

MAKERS = {
    "heat.h5": make_heat,
    "mass.mtx": make_mass,
    "burgers.zarr": make_burgers,
    "ratings.mtx": make_ratings,
    "tensor.zarr": make_tensor,
    "sensors_v2.zarr": make_sensors,
    "climate.npz": make_climate,
    "spectra.npy": make_spectra,
    "heat_coo.h5": make_heat_coo,
}


def main(outdir: Path | str | None = None) -> list[Path]:
    outdir = Path(outdir) if outdir is not None else HERE
    outdir.mkdir(parents=True, exist_ok=True)
    return [maker(outdir) for maker in MAKERS.values()]


def _cli(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("outdir", nargs="?", default=str(HERE), help="default: %(default)s")
    args = parser.parse_args(argv)
    for path in main(args.outdir):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(_cli())
