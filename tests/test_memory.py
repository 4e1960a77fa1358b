"""The allocator settings that keep a worker's resident memory close to what it holds."""

from __future__ import annotations

import subprocess
import sys

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
