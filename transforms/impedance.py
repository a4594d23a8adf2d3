"""The circuit's impedance and the resnorm of DESIGN.md section 2, vectorised with NumPy.

Parameters are arrays of shape (N,) or (N, 5) in the order ``PARAMETERS``; every function
works on many rows at once, with no Python loop per row (loops run over chunks and grids only).
Kernels use real arithmetic (real and imaginary parts as separate arrays), which is exact
algebra of the complex formula and about three times faster.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

PARAMETERS = ("Rsh", "Ra", "Ca", "Rb", "Cb")

FloatArray = npt.NDArray[np.float64]
ComplexArray = npt.NDArray[np.complex128]
IntArray = npt.NDArray[np.integer]
AnyFloatArray = npt.NDArray[np.floating]

# Cells (rows x frequencies) per chunk: keeps temporaries in cache.
_CHUNK_CELLS = 262_144
# A grid shared by at least this many (model, configuration) pairs is evaluated once per row.
_SHARED_GRID_MIN_PAIRS = 64


def frequency_grid(min_freq: FloatArray, max_freq: FloatArray, num_points: int) -> FloatArray:
    """Per row, ``num_points`` frequencies evenly spaced in log10 from min to max, both included."""
    steps = np.linspace(0.0, 1.0, num_points)
    lo = np.log10(np.asarray(min_freq, dtype=np.float64))[:, None]
    hi = np.log10(np.asarray(max_freq, dtype=np.float64))[:, None]
    return np.asarray(10.0 ** (lo + (hi - lo) * steps[None, :]), dtype=np.float64)


def impedance(params: FloatArray, freqs: FloatArray) -> ComplexArray:
    """Z(f) of the modified Randles circuit; ``params`` (N, 5), ``freqs`` (N, F) -> (N, F)."""
    re, im = impedance_parts(params, 2.0 * np.pi * np.asarray(freqs, dtype=np.float64))
    return np.asarray(re + 1j * im, dtype=np.complex128)


def impedance_parts(
    params: AnyFloatArray, omega: AnyFloatArray
) -> tuple[AnyFloatArray, AnyFloatArray]:
    """Real and imaginary parts of Z at angular frequencies ``omega`` ((F,) or (N, F)).

    Computed in the dtype of ``params`` (float32 or float64).
    """
    dtype = params.dtype
    w = np.asarray(omega, dtype=dtype)
    if w.ndim == 1:
        w = w[None, :]
    rsh, ra, ca, rb, cb = (params[:, i : i + 1] for i in range(5))
    xa = w * (ra * ca)
    ar = ra / (1.0 + xa * xa)
    ai = -ar * xa
    xb = w * (rb * cb)
    br = rb / (1.0 + xb * xb)
    sr = ar + br
    si = ai - br * xb
    t = rsh + sr
    den = t * t + si * si
    re = rsh * (sr * t + si * si) / den
    im = (rsh * rsh) * si / den
    return re, im


def _valid_rows(
    model: FloatArray,
    reference: FloatArray,
    min_freq: FloatArray,
    max_freq: FloatArray,
    points: npt.NDArray[np.int64],
) -> npt.NDArray[np.bool_]:
    return np.asarray(
        np.isfinite(model).all(axis=1)
        & np.isfinite(reference).all(axis=1)
        & np.isfinite(min_freq)
        & np.isfinite(max_freq)
        & (min_freq > 0)
        & (max_freq > 0)
        & (points >= 2),
        dtype=np.bool_,
    )


def resnorm(
    model: FloatArray,
    reference: FloatArray,
    min_freq: FloatArray,
    max_freq: FloatArray,
    num_points: npt.NDArray[np.integer],
) -> FloatArray:
    """Mean over the reference's grid of |Z_model - Z_reference|, for N pairs at once.

    ``model`` and ``reference`` are (N, 5); the grid arrays are (N,). Rows with a non-finite
    input or fewer than 2 grid points give NaN. Float64 throughout.
    """
    model = np.asarray(model, dtype=np.float64)
    reference = np.asarray(reference, dtype=np.float64)
    min_freq = np.asarray(min_freq, dtype=np.float64)
    max_freq = np.asarray(max_freq, dtype=np.float64)
    points = np.asarray(num_points, dtype=np.int64)
    out = np.full(len(model), np.nan)
    ok = _valid_rows(model, reference, min_freq, max_freq, points)
    for n in np.unique(points[ok]):
        rows = np.flatnonzero(ok & (points == n))
        step = max(1, _CHUNK_CELLS // int(n))
        for start in range(0, len(rows), step):
            idx = rows[start : start + step]
            omega = 2.0 * np.pi * frequency_grid(min_freq[idx], max_freq[idx], int(n))
            mr, mi = impedance_parts(model[idx], omega)
            rr, ri = impedance_parts(reference[idx], omega)
            dr = mr - rr
            di = mi - ri
            out[idx] = np.sqrt(dr * dr + di * di).mean(axis=1)
    return out


def pair_resnorm(
    models: FloatArray,
    configs: FloatArray,
    config_min_freq: FloatArray,
    config_max_freq: FloatArray,
    config_num_points: IntArray,
    pair_model: IntArray,
    pair_config: IntArray,
    *,
    dtype: type[np.floating] = np.float32,
) -> FloatArray:
    """Resnorm of many (model, configuration) pairs, each on its configuration's grid.

    ``models`` (M, 5) and ``configs`` (C, 5) hold parameters; ``pair_model``/``pair_config``
    (P,) index them. Where many pairs share a grid, each model's impedance is computed once
    per grid (model by model, in cache-sized chunks) and each configuration's once, then only
    the differences per pair; rare grids fall back to :func:`resnorm`. ``dtype`` float32 (the
    default) carries a relative error of about 1e-5 of the resnorm (more when the resnorm is
    tiny next to |Z|); use float64 for exact figures.
    """
    models = np.asarray(models, dtype=np.float64)
    configs = np.asarray(configs, dtype=np.float64)
    cmin = np.asarray(config_min_freq, dtype=np.float64)
    cmax = np.asarray(config_max_freq, dtype=np.float64)
    cn = np.asarray(config_num_points, dtype=np.int64)
    pm = np.asarray(pair_model, dtype=np.int64)
    pc = np.asarray(pair_config, dtype=np.int64)
    out = np.full(len(pm), np.nan)
    if len(pm) == 0:
        return out
    model_ok: npt.NDArray[np.bool_] = np.asarray(np.isfinite(models).all(axis=1))
    config_ok = (
        np.isfinite(configs).all(axis=1)
        & np.isfinite(cmin)
        & np.isfinite(cmax)
        & (cmin > 0)
        & (cmax > 0)
        & (cn >= 2)
    )
    config_grid = np.asarray(np.where(config_ok, _grid_ids(cmin, cmax, cn), -1), dtype=np.int64)
    pair_grid = np.asarray(np.where(model_ok[pm], config_grid[pc], -1), dtype=np.int64)
    if len(pm) > 1 and not bool((np.diff(pm) >= 0).all()):
        order = np.lexsort((pm, pair_grid))
    elif len(pm) and pair_grid.min() == pair_grid.max():
        order = np.arange(len(pm))
    else:
        order = np.argsort(pair_grid, kind="stable")
    sorted_grid = pair_grid[order]
    grids, starts, counts = np.unique(sorted_grid, return_index=True, return_counts=True)
    rare: list[npt.NDArray[np.int64]] = []
    for g, lo, count in zip(grids.tolist(), starts.tolist(), counts.tolist(), strict=True):
        if g < 0:
            continue
        sel = order[lo : lo + count]
        if count < _SHARED_GRID_MIN_PAIRS:
            rare.append(sel)
            continue
        cfg_rows = np.unique(pc[sel])  # only the configurations these pairs use
        c0 = cfg_rows[0]
        omega = 2.0 * np.pi * frequency_grid(cmin[c0 : c0 + 1], cmax[c0 : c0 + 1], int(cn[c0]))[0]
        out[sel] = _shared_grid(models, configs, cfg_rows, pm[sel], pc[sel], omega, dtype)
    if rare:
        idx = np.concatenate(rare)
        out[idx] = resnorm(
            models[pm[idx]], configs[pc[idx]], cmin[pc[idx]], cmax[pc[idx]], cn[pc[idx]]
        )
    return out


def _grid_ids(
    cmin: FloatArray, cmax: FloatArray, cn: npt.NDArray[np.int64]
) -> npt.NDArray[np.int64]:
    """Dense id of each row's (min, max, points) grid: a 1-D unique on the bytes of the three
    numbers (exact, no hashing)."""
    rows = np.empty(len(cmin), dtype=[("a", "<f8"), ("b", "<f8"), ("n", "<i8")])
    rows["a"], rows["b"], rows["n"] = cmin, cmax, cn
    keys = rows.view(np.dtype((np.void, rows.dtype.itemsize)))
    _, inverse = np.unique(keys, return_inverse=True)
    return np.asarray(inverse, dtype=np.int64).reshape(-1)


def _impedance_table(
    params: FloatArray, omega: FloatArray, dtype: type[np.floating]
) -> tuple[AnyFloatArray, AnyFloatArray]:
    n, f = len(params), len(omega)
    re = np.empty((n, f), dtype=dtype)
    im = np.empty((n, f), dtype=dtype)
    step = max(1, _CHUNK_CELLS // max(f, 1))
    w = omega.astype(dtype)
    for start in range(0, n, step):
        re[start : start + step], im[start : start + step] = impedance_parts(
            params[start : start + step].astype(dtype), w
        )
    return re, im


def _shared_grid(
    models: FloatArray,
    configs: FloatArray,
    cfg_rows: npt.NDArray[np.int64],
    pm: npt.NDArray[np.int64],
    pc: npt.NDArray[np.int64],
    omega: FloatArray,
    dtype: type[np.floating],
) -> FloatArray:
    """Pairs sorted by model, all on one grid ``omega``."""
    cre, cim = _impedance_table(configs[cfg_rows], omega, dtype)
    local = np.full(len(configs), -1, dtype=np.int64)
    local[cfg_rows] = np.arange(len(cfg_rows))
    c_local = local[pc]
    new_model = np.empty(len(pm), dtype=np.bool_)
    new_model[0] = True
    np.not_equal(pm[1:], pm[:-1], out=new_model[1:])
    model_starts = np.flatnonzero(new_model)
    m_local = np.cumsum(new_model) - 1
    models_per_chunk = max(1, _CHUNK_CELLS // max(len(omega), 1) // 4)
    w = omega.astype(dtype)
    out = np.empty(len(pm), dtype=np.float64)
    for first in range(0, len(model_starts), models_per_chunk):
        last = min(first + models_per_chunk, len(model_starts))
        lo = model_starts[first]
        hi = model_starts[last] if last < len(model_starts) else len(pm)
        mre, mim = impedance_parts(models[pm[model_starts[first:last]]].astype(dtype), w)
        ml = m_local[lo:hi] - first
        cl = c_local[lo:hi]
        dr = mre[ml]
        dr -= cre[cl]
        di = mim[ml]
        di -= cim[cl]
        dr *= dr
        di *= di
        dr += di
        np.sqrt(dr, out=dr)
        out[lo:hi] = dr.mean(axis=1, dtype=np.float64)
    return out
