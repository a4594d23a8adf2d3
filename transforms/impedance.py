"""The circuit's impedance and the resnorm of DESIGN.md section 2, vectorised with NumPy.

Parameters are arrays of shape (N,) in the order ``PARAMETERS``; every function works on N
(model, reference) pairs at once, with no Python loop per pair.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

PARAMETERS = ("Rsh", "Ra", "Ca", "Rb", "Cb")

FloatArray = npt.NDArray[np.float64]
ComplexArray = npt.NDArray[np.complex128]

# Pairs evaluated per chunk: bounds the (chunk, num_points) complex temporaries.
_CHUNK_CELLS = 4_000_000


def frequency_grid(min_freq: FloatArray, max_freq: FloatArray, num_points: int) -> FloatArray:
    """Per row, ``num_points`` frequencies evenly spaced in log10 from min to max, both included."""
    steps = np.linspace(0.0, 1.0, num_points)
    lo = np.log10(np.asarray(min_freq, dtype=np.float64))[:, None]
    hi = np.log10(np.asarray(max_freq, dtype=np.float64))[:, None]
    return np.asarray(10.0 ** (lo + (hi - lo) * steps[None, :]), dtype=np.float64)


def impedance(params: FloatArray, freqs: FloatArray) -> ComplexArray:
    """Z(f) of the modified Randles circuit; ``params`` (N, 5), ``freqs`` (N, F) -> (N, F)."""
    rsh, ra, ca, rb, cb = (params[:, i : i + 1] for i in range(5))
    jw = 2j * np.pi * freqs
    za = ra / (1.0 + jw * ra * ca)
    zb = rb / (1.0 + jw * rb * cb)
    return np.asarray(rsh * (za + zb) / (rsh + za + zb), dtype=np.complex128)


def resnorm(
    model: FloatArray,
    reference: FloatArray,
    min_freq: FloatArray,
    max_freq: FloatArray,
    num_points: npt.NDArray[np.integer],
) -> FloatArray:
    """Mean over the reference's grid of |Z_model - Z_reference|, for N pairs at once.

    ``model`` and ``reference`` are (N, 5); the grid arrays are (N,). Rows with a non-finite
    input or fewer than 2 grid points give NaN.
    """
    model = np.asarray(model, dtype=np.float64)
    reference = np.asarray(reference, dtype=np.float64)
    min_freq = np.asarray(min_freq, dtype=np.float64)
    max_freq = np.asarray(max_freq, dtype=np.float64)
    points = np.asarray(num_points, dtype=np.int64)
    out = np.full(len(model), np.nan)
    ok = (
        np.isfinite(model).all(axis=1)
        & np.isfinite(reference).all(axis=1)
        & np.isfinite(min_freq)
        & np.isfinite(max_freq)
        & (min_freq > 0)
        & (max_freq > 0)
        & (points >= 2)
    )
    for n in np.unique(points[ok]):
        rows = np.flatnonzero(ok & (points == n))
        step = max(1, _CHUNK_CELLS // int(n))
        for start in range(0, len(rows), step):
            idx = rows[start : start + step]
            freqs = frequency_grid(min_freq[idx], max_freq[idx], int(n))
            diff = impedance(model[idx], freqs) - impedance(reference[idx], freqs)
            out[idx] = np.abs(diff).mean(axis=1)
    return out
