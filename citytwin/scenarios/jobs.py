"""Running scenarios as background jobs: the request returns at once with a run id, the work goes on.

Jobs run in a small thread pool inside the API process; the heavy lifting inside a job runs on the
Dask client, so a thread is enough here. Status and progress live in ``simulation_runs``, so any API
process can answer for any run.
"""

from __future__ import annotations

import logging
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Callable

log = logging.getLogger("citytwin.jobs")
_executor: ThreadPoolExecutor | None = None
_lock = threading.Lock()


def submit(job: Callable[[], object]) -> Future:
    """Run ``job`` in the background; failures are logged (the job records them on its run)."""
    global _executor
    with _lock:
        if _executor is None:
            _executor = ThreadPoolExecutor(max_workers=2, thread_name_prefix="citytwin-job")
    future = _executor.submit(job)
    future.add_done_callback(_log_failure)
    return future


def _log_failure(future: Future) -> None:
    exc = future.exception()
    if exc is not None:
        log.warning("scenario job failed: %s", exc)
