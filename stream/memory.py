"""Keeping the worker's memory close to what it holds, and its upkeep cheap: glibc's
allocator and Python's cyclic garbage collector.

Python objects over 512 bytes (states, their JSON, packed window buckets), aiokafka's fetch
buffers and RocksDB all come from glibc's malloc. Left to its defaults, glibc keeps freed
memory for reuse: it raises its mmap threshold after each large free (so later fetch buffers of
megabytes land in the heap, where one live chunk pins the pages around it), gives each thread
an arena of its own, and returns heap pages to the system only from the top. A worker that
loaded a month of history then held tens of MB more than it used. Elsewhere (musl, macOS)
these are no-ops.

Python's cyclic garbage collector runs a young collection every 700 new container objects
(tuples, dicts, states) and so, under a backlog, every 60 events or so, and every hundred of
those a full one over every object the worker holds (its windows, caches and Faust's own).
Replaying a month of history in-process (the ingest and RocksDB, no broker; the harness's own
records made each full collection dearer than in a worker), 27% of the time went to
collections, most of it to 23 full ones of over a second each. The worker makes very little
cyclic garbage, so it collects less often.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import logging

log = logging.getLogger("cx_stream")

_M_MMAP_THRESHOLD = -3
_M_ARENA_MAX = -8
MMAP_THRESHOLD = 256 * 1024
"""Allocations from this size on are mapped on their own and unmapped when freed."""
ARENA_MAX = 2
"""malloc arenas of the whole process (glibc's default: eight per core)."""


GC_THRESHOLDS = (50_000, 20, 100)
"""New container objects between young collections, and how many of each generation's
collections before the next generation's (Python's defaults: 700, 10, 10). Replaying a million
events in-process (the ingest with RocksDB, no broker), it went from 7,400 to 11,300 events/s:
collections took 2 s of 89 s instead of 37 s of 136 s."""


def _glibc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    libc = ctypes.CDLL(name)
    return libc if hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None


_libc = _glibc()


def limit_heap_growth() -> bool:
    """Fix the mmap threshold and the number of arenas; to be called before threads start.
    Returns whether the allocator is glibc's (and took the settings)."""
    if _libc is None:
        return False
    return bool(
        _libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD) and _libc.mallopt(_M_ARENA_MAX, ARENA_MAX)
    )


def release_free_memory() -> bool:
    """Give the free pages of every malloc arena back to the system, not only the heap's top.
    Returns whether any memory was released."""
    return _libc is not None and bool(_libc.malloc_trim(0))


def collect_garbage_less_often() -> None:
    """Raise the cyclic garbage collector's thresholds to GC_THRESHOLDS: it still collects
    cycles, a young generation about 70 times less often and the whole heap rarely."""
    gc.set_threshold(*GC_THRESHOLDS)


def prepare_long_running_process() -> None:
    """The allocator and collector settings of a worker (and of the benchmark's baseline, which
    must run like one); to be called before threads start."""
    limit_heap_growth()
    collect_garbage_less_often()
