"""The Dask client the scenarios run on: the scheduler named by settings, or a LocalCluster."""

from __future__ import annotations

import os

_local_client = None


def get_client(scheduler: str = "", *, n_workers: int | None = None):
    """A ``dask.distributed.Client``: connected to ``scheduler`` if given, else a shared LocalCluster.

    The LocalCluster uses one single-threaded worker process per core, which suits the numba and
    NumPy kernels (they release the GIL but keep a core busy each).
    """
    global _local_client
    from dask.distributed import Client, LocalCluster

    if scheduler:
        return Client(scheduler)
    if _local_client is None or _local_client.status == "closed":
        workers = n_workers or max(1, min(os.cpu_count() or 1, 4))
        cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                               dashboard_address=None, silence_logs=40)
        _local_client = Client(cluster)
    return _local_client
