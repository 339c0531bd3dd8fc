"""Threads for the aggregation kernels: a few Python threads over column chunks, BLAS held to one thread.

The per-coordinate work of the robust rules (sorting, Gram blocks, distances to a point) splits into
column chunks that threads can run in parallel: numpy's sort, its element-wise loops and BLAS all release
the GIL. BLAS must then run single-threaded: a multi-threaded OpenBLAS called from several threads at once
oversubscribes the cores, and on a loaded machine its spinning worker threads slow a Gram matrix of 100 x
10^6 down tenfold (measured: 7-20 s instead of 1 s on a shared 2-core machine). While a pool runs,
:func:`single_threaded_blas` limits every BLAS library threadpoolctl finds to one thread (threadpoolctl
comes with scikit-learn); the limit is reference-counted, so overlapping calls from several threads
restore the original setting only when the last one ends. It is process-wide while it lasts: BLAS calls
of other threads of the process are single-threaded meanwhile.

Results never depend on the number of threads: each chunk's result is kept apart and combined in chunk
order.

Kernels that pass over a chunk many times can take their work arrays from :func:`scratch`: one buffer per
name and thread, reused from chunk to chunk of a :func:`parallel_map` (a fresh multi-megabyte array per
chunk costs its page faults on every first touch) and released when the map ends.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt

__all__ = [
    "chunk_width",
    "for_column_chunks",
    "map_column_chunks",
    "parallel_map",
    "scratch",
    "single_threaded_blas",
]

T = TypeVar("T")

CHUNK_BYTES = 1 << 22  # default chunk: rows x width float64 values near 4 MB, stays in cache
_MAX_THREADS = 4

_lock = threading.Lock()
_depth = 0
_limiter: Any = None
_controller: Any = None
_controller_loaded = False
_local = threading.local()


def thread_count() -> int:
    """Threads the kernels use: the cores this process may run on, at most 4."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        cores = os.cpu_count() or 1
    return max(1, min(_MAX_THREADS, cores))


def _blas_controller() -> Any:
    global _controller, _controller_loaded
    if not _controller_loaded:
        try:
            from threadpoolctl import ThreadpoolController  # type: ignore[import-untyped]
        except ImportError:  # pragma: no cover - threadpoolctl ships with scikit-learn
            _controller = None
        else:
            _controller = ThreadpoolController().select(user_api="blas")
        _controller_loaded = True
    return _controller


@contextmanager
def single_threaded_blas() -> Iterator[None]:
    """Hold every BLAS library to one thread inside the block (a no-op without threadpoolctl)."""
    global _depth, _limiter
    with _lock:
        if _depth == 0:
            controller = _blas_controller()
            _limiter = None if controller is None else controller.limit(limits=1)
        _depth += 1
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0 and _limiter is not None:
                _limiter.restore_original_limits()
                _limiter = None


def parallel_map(count: int, work: Callable[[int], T]) -> list[T]:
    """``[work(0), ..., work(count - 1)]``, run on up to :func:`thread_count` threads with single-threaded BLAS.

    ``work`` must only write what is its own (its result, or its own slice of an output). An exception
    raised by any call propagates.
    """
    threads = min(thread_count(), count)
    if threads <= 1:
        owner = not hasattr(_local, "buffers")
        if owner:
            _local.buffers = {}
        try:
            return [work(k) for k in range(count)]
        finally:
            if owner:
                del _local.buffers
    with single_threaded_blas(), ThreadPoolExecutor(max_workers=threads, initializer=_start_worker) as pool:
        return list(pool.map(work, range(count)))


def _start_worker() -> None:
    _local.buffers = {}


def scratch(name: str, shape: tuple[int, ...], dtype: npt.DTypeLike) -> npt.NDArray[Any]:
    """A work array of ``shape`` and ``dtype`` (uninitialized) that this thread reuses under ``name`` from
    one call to the next inside a :func:`parallel_map`; outside one, a fresh array.

    The contents are overwritten by the next call with the same name on the same thread: use it only for
    values that do not outlive the chunk.
    """
    buffers: dict[str, npt.NDArray[Any]] | None = getattr(_local, "buffers", None)
    kind = np.dtype(dtype)
    size = 1
    for extent in shape:
        size *= extent
    if buffers is None:
        return np.empty(shape, dtype=kind)
    held = buffers.get(name)
    if held is None or held.dtype != kind or held.size < size:
        held = np.empty(max(size, 0 if held is None else held.size), dtype=kind)
        buffers[name] = held
    return held[:size].reshape(shape)


def chunk_width(rows: int, budget_bytes: int | None = None) -> int:
    """Columns per chunk so that ``rows`` x width float64 values take about ``budget_bytes`` (default
    :data:`CHUNK_BYTES`), at least 256."""
    budget = CHUNK_BYTES if budget_bytes is None else budget_bytes
    return max(256, budget // (8 * max(rows, 1)))


def map_column_chunks(rows: int, d: int, work: Callable[[int, int], T]) -> list[T]:
    """``work(start, stop)`` on consecutive column ranges covering ``[0, d)``; results in column order.

    Chunks hold ``rows`` x width float64 values near 4 MB and run on :func:`parallel_map`.
    """
    width = chunk_width(rows)
    starts = range(0, d, width)
    return parallel_map(len(starts), lambda k: work(starts[k], min(starts[k] + width, d)))


def for_column_chunks(rows: int, d: int, work: Callable[[int, int], None]) -> None:
    """Call ``work(start, stop)`` on consecutive column ranges covering ``[0, d)`` (see :func:`map_column_chunks`).

    ``work`` must only write its own columns of the output.
    """
    map_column_chunks(rows, d, work)
