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


EVALUATION = """
import resource
import torch
from ltbench.config import RunConfig
from ltbench.engine.loop import evaluate
from ltbench.engine.memory import keep_freed_memory
from ltbench.models import build_model

keep_freed_memory()
model = build_model("resnet32", 10, 3).to(memory_format=torch.channels_last)

class Loader:
    def __init__(self, n):
        self.images = torch.randn(n, 3, 32, 32)

    def batches(self, batch_size, rank=0, world=1):
        for start in range(0, len(self.images), batch_size):
            x = self.images[start:start + batch_size]
            yield {"x": x, "y": torch.zeros(len(x))}

def faults(batch, n):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    evaluate(model, Loader(n), batch, "fp32", torch.device("cpu"), with_features=False)
    return (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / n

default = RunConfig().eval_batch_size
faults(default, default)  # the first pass: its pages fault in once
large = min(faults(1024, 1024) for _ in range(2))  # the second pass would fault nothing if memory were kept
print(min(faults(default, default) for _ in range(2)), large)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="mallopt is glibc's (Linux)")
def test_the_default_evaluation_batch_reuses_its_memory_on_cpu():
    """ResNet-32 on 32x32 images: at the default eval batch every activation stays in memory the process keeps;
    at 1024 (64 MB activations, over the 32 MB the allocator can keep) each pass faults them in again. The
    fewest faults of two passes each: a pass right after a larger one may fault a block in once more (16 pages
    per image seen once in CI at the default batch), a steady one does not."""
    out = subprocess.run([sys.executable, "-c", EVALUATION], capture_output=True, text=True, check=True,
                         env={"OMP_NUM_THREADS": "1", "PATH": ""}).stdout.split()
    default, large = float(out[0]), float(out[1])
    assert default < 5 and large > 100  # pages per image (measured: 0 against 296-760)
