"""The allocator and garbage collector settings of a worker: resident memory close to what
it holds, collections that still happen."""

from __future__ import annotations

import subprocess
import sys

from stream.broker import free_port
from stream.memory import GC_THRESHOLDS

FRAGMENTED_HEAP = """
from stream.memory import limit_heap_growth, release_free_memory

def resident_mb():
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) // 1024 for line in status if line.startswith("VmRSS"))

assert limit_heap_growth()
before = resident_mb()
states = [bytes(1000) for _ in range(200_000)]  # 200 MB of objects too large for pymalloc
pinned = bytearray(2000)  # allocated last: the heap's top cannot shrink past it
del states
freed = resident_mb()
assert release_free_memory()
print(before, freed, resident_mb())
"""


def test_freed_memory_goes_back_to_the_system_past_a_live_allocation() -> None:
    # in a process of its own: the test process's heap is not the one to measure
    result = subprocess.run(
        [sys.executable, "-c", FRAGMENTED_HEAP], capture_output=True, text=True, check=True
    )
    before, freed, released = map(int, result.stdout.split())
    assert freed - before > 150, "glibc kept the freed 200 MB (the case to mend)"
    assert released - before < 30


CYCLIC_GARBAGE = """
import gc
from stream.memory import GC_THRESHOLDS, collect_garbage_less_often

collect_garbage_less_often()
assert gc.get_threshold() == GC_THRESHOLDS
gc.collect()
baseline = len(gc.get_objects())
peak = 0
for made in range(10 * GC_THRESHOLDS[0]):  # like a long backlog: ten young collections' worth
    cycle = {}
    cycle["self"] = cycle
    if made % 10_000 == 0:
        peak = max(peak, len(gc.get_objects()) - baseline)
print(GC_THRESHOLDS[0], peak, sum(stats["collected"] for stats in gc.get_stats()))
"""


def test_the_worker_s_garbage_collector_still_collects_cycles() -> None:
    result = subprocess.run(
        [sys.executable, "-c", CYCLIC_GARBAGE], capture_output=True, text=True, check=True
    )
    young, peak, collected = map(int, result.stdout.split())
    assert collected >= 8 * young, "cycles were left to pile up"
    # a young collection's worth, and what the last middle collection promoted
    assert peak <= 2 * young, "cycles are waiting beyond their young collection"


WORKER_SETTINGS = """
import gc, sys
import click
from stream.app import run_worker
from stream.config import Settings

try:
    run_worker(Settings(broker=f"kafka://127.0.0.1:{sys.argv[1]}"))  # nothing listens there
except click.ClickException:
    pass
print(*gc.get_threshold())
"""


def test_a_worker_runs_with_those_settings() -> None:
    # run_worker makes them before it reaches for the broker: one that is not there suffices
    result = subprocess.run(
        [sys.executable, "-c", WORKER_SETTINGS, str(free_port())],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    assert tuple(map(int, result.stdout.split())) == GC_THRESHOLDS
