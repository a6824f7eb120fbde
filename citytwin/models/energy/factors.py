"""The exact low-rank form of the demand matrix, and the fast sums it allows.

Every building's hourly demand is its floor area times one of a few per-m2 profiles:

    D[i, t] = A_i P[k_i, t]        (k_i: archetype, or archetype x schedule shift)

so any sum over a group g of buildings is a small matrix product,

    sum_{i in g} D[i, t] = sum_k W[g, k] P[k, t],   W[g, k] = sum_{i in g, k_i = k} A_i,

and per-building energy and peak are A_i sum_t P[k_i, t] and A_i max_t P[k_i, t]. This is the same
arithmetic as summing the matrix, reordered; the building x hour matrix is never formed.

:func:`citytwin.models.energy.demand` registers the factors (A, k, P) of each array it creates
under the array's Dask name. A Dask name changes whenever the array is transformed (scaled,
subset, rechunked), so a registered name always means "exactly this product"; anything else falls
back to the generic chunk-by-chunk path.
"""

from __future__ import annotations

import warnings
from collections import OrderedDict
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np

_REGISTRY: "OrderedDict[str, Factors]" = OrderedDict()
_REGISTRY_SIZE = 32  # recent demand arrays; factors are small (profiles + two per-building vectors)


@dataclass(frozen=True)
class Factors:
    """D[i, t] = area[i] * profiles[index[i], t]."""

    area: np.ndarray  # (n,) float64 m2
    index: np.ndarray  # (n,) int32 row of profiles
    profiles: np.ndarray  # (K, T) float32 kW/m2

    def block(self, start: int, stop: int) -> np.ndarray:
        """Rows start:stop of D as float32 (for checks; the model's Dask tasks build their own)."""
        out = self.profiles[self.index[start:stop]]
        out *= self.area[start:stop, None].astype(np.float32)
        return out

    def group_weights(self, codes: np.ndarray, n_groups: int) -> np.ndarray:
        """W (n_groups, K) float64: floor area per group and profile; codes (n, L), -1 = no group."""
        k = self.profiles.shape[0]
        weights = np.zeros(n_groups * k, dtype=np.float64)
        for level in range(codes.shape[1]):
            valid = codes[:, level] >= 0
            flat = codes[valid, level].astype(np.int64) * k + self.index[valid]
            weights += np.bincount(flat, weights=self.area[valid], minlength=n_groups * k)
        return weights.reshape(n_groups, k)


def register(name: str, factors: Factors) -> None:
    _REGISTRY[name] = factors
    _REGISTRY.move_to_end(name)
    while len(_REGISTRY) > _REGISTRY_SIZE:
        _REGISTRY.popitem(last=False)


def lookup(array) -> Factors | None:
    """The factors of a Dask array created by ``demand`` (unchanged since), else None."""
    name = getattr(array, "name", None)
    factors = _REGISTRY.get(name) if isinstance(name, str) else None
    if factors is None or array.shape != (len(factors.area), factors.profiles.shape[1]):
        return None
    return factors


@contextmanager
def building_by_hour_grid():
    """Silence dask's "Increasing number of chunks" warning for blockwise calls whose output is
    the intended (building chunks x time chunks) grid built from 1-D building inputs."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Increasing number of chunks by factor")
        yield
