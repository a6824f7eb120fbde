"""The Dask client the scenarios run on: the scheduler named by settings, or a LocalCluster.

One client per scheduler address per process: the API process starts its LocalCluster with the first
scenario job and reuses it for every later one (starting worker processes costs seconds, a scenario on a
small city less than that).
"""

from __future__ import annotations

import os
import threading

_clients: dict[str, object] = {}
_lock = threading.Lock()


def get_client(scheduler: str = "", *, n_workers: int | None = None):
    """A ``dask.distributed.Client``: connected to ``scheduler`` if given, else a shared LocalCluster.

    Parameters
    ----------
    scheduler : str
        Address of a running scheduler (``CITYTWIN_DASK_SCHEDULER``, e.g. ``tcp://10.0.0.5:8786``);
        empty for a LocalCluster on this machine.
    n_workers : int, optional
        Workers of a new LocalCluster (default: one per core, at most 4). Ignored when a client for
        ``scheduler`` already exists in this process.

    The LocalCluster uses one single-threaded worker process per core, which suits the numba and
    NumPy kernels (they release the GIL but keep a core busy each). The lock makes concurrent
    scenario jobs share one cluster instead of racing to start two.
    """
    from dask.distributed import Client, LocalCluster

    with _lock:
        client = _clients.get(scheduler)
        if client is not None and client.status not in ("closed", "closing"):
            return client
        if scheduler:
            client = Client(scheduler)
        else:
            workers = n_workers or max(1, min(os.cpu_count() or 1, 4))
            cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                                   dashboard_address=":0", silence_logs=40)
            client = Client(cluster)
        _clients[scheduler] = client
        return client


def worker_count(client) -> int:
    """Workers the client's scheduler has now (at least 1, for chunk planning)."""
    try:
        return max(1, len(client.scheduler_info(n_workers=-1)["workers"]))
    except Exception:  # noqa: BLE001 - a planning hint only; an unreachable scheduler fails later, clearly
        return 1


def close_clients() -> None:
    """Close every client (and LocalCluster) this module started: at process shutdown, or after tests.

    Until then a started client stays the process's default Dask scheduler for all Dask work.
    """
    with _lock:
        clients = list(_clients.values())
        _clients.clear()
    for client in clients:
        cluster = getattr(client, "cluster", None)
        client.close()
        if cluster is not None:
            cluster.close()
