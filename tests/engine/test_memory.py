"""The training process keeps freed memory (engine/memory.py): a step's blocks (here four of 8 MB, as a step's
activations), allocated and freed again and again, fault their pages in once, not every step."""
import subprocess
import sys

import pytest

PROBE = """
import resource, sys
import numpy as np
from ltbench.engine.memory import keep_freed_memory
took = keep_freed_memory()
np.ones(1).sum()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(40):
    blocks = [np.ones(8 << 18, dtype=np.float32) for _ in range(4)]  # 8 MB each: below the 32 MB limit
    del blocks
print(took, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def faults(env_value: str) -> tuple[str, int]:
    out = subprocess.run([sys.executable, "-c", PROBE], env={"LTBENCH_KEEP_FREED_MEMORY": env_value, "PATH": ""},
                         capture_output=True, text=True, check=True).stdout.split()
    return out[0], int(out[1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="mallopt is glibc's (Linux)")
def test_freed_memory_is_kept_instead_of_faulted_in_again():
    took, kept = faults("1")
    off, returned = faults("0")
    assert (took, off) == ("True", "False")
    once = 4 * (8 << 20) // 4096  # the pages of one step's blocks
    assert returned > 4 * once  # the default allocator returns them and faults them in again (here ~10 of 40 times)
    assert kept < 2 * once  # kept: faulted in once
