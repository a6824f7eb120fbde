"""Numba kernels of the energy model (imported lazily: numba takes ~0.5 s to import)."""

from __future__ import annotations

import numba


@numba.njit(cache=True, nogil=True)
def group_sum(block, codes, out):  # pragma: no cover - compiled
    """out[codes[i, l], :] += block[i, :] for every row i and level l with codes[i, l] >= 0.

    One pass over the chunk with float64 accumulators (``out``), whatever the dtype of ``block``:
    a group-by sum that never copies the chunk. nogil, so threads of one worker run in parallel.
    """
    n, length = block.shape
    for i in range(n):
        for level in range(codes.shape[1]):
            g = codes[i, level]
            if g >= 0:
                for t in range(length):
                    out[g, t] += block[i, t]


@numba.njit(cache=True, nogil=True)
def group_sum_generated(area, index, codes, profiles, out):  # pragma: no cover - compiled
    """The same sums as ``group_sum`` of the block area[i] * profiles[index[i], :], without the block.

    Each building-hour value is formed in float32 exactly as the demand block holds it, then added
    to the float64 accumulators: one pass over the chunk's building-hours that only touches the
    profiles and ``out`` (cache-resident) instead of writing and re-reading a chunk-sized block.
    """
    n = area.shape[0]
    length = profiles.shape[1]
    for i in range(n):
        a = area[i]
        k = index[i]
        for level in range(codes.shape[1]):
            g = codes[i, level]
            if g >= 0:
                for t in range(length):
                    out[g, t] += a * profiles[k, t]
