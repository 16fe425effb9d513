"""Training processes keep freed memory for reuse (glibc): large blocks stop page-faulting back in every step."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from detcore.engine.malloc import keep_freed_memory

# A step's worth of large blocks (64 MB, above glibc's largest mmap threshold), freed and
# allocated again, as a training step does with its feature maps and RoI features; counted once
# the heap has settled (its first few steps grow it).
PROBE = """
import json, resource, sys
import torch
from detcore.engine.malloc import keep_freed_memory
said = keep_freed_memory()
for _ in range(20):  # the heap settles in its first steps
    x = torch.ones(16 << 20); del x
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(10):
    x = torch.ones(16 << 20); del x
print(json.dumps({"said": said, "faults": resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before}))
"""


def _probe(extra_env: dict[str, str]) -> dict:
    import os

    env = {k: v for k, v in os.environ.items() if k not in ("DETCORE_MALLOC", "LD_PRELOAD")}
    out = subprocess.run([sys.executable, "-c", PROBE], env={**env, **extra_env}, capture_output=True, text=True,
                         check=True, timeout=120)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_kept_memory_is_reused_instead_of_faulted_in_again() -> None:
    kept, system = _probe({}), _probe({"DETCORE_MALLOC": "system"})
    assert "kept for reuse" in kept["said"] and "glibc defaults" in system["said"]
    # glibc's defaults map every 64 MB block afresh: 16,384 pages each, 10 times
    assert system["faults"] > 100_000
    assert kept["faults"] < system["faults"] / 20


@pytest.mark.parametrize("env, expected", [
    ({"DETCORE_MALLOC": "system"}, "glibc defaults (DETCORE_MALLOC=system)"),
    ({"DETCORE_MALLOC": "fast"}, "DETCORE_MALLOC='fast' is not 'keep' or 'system'"),
    ({"LD_PRELOAD": "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2"}, "the preloaded allocator is used as it is"),
])
def test_opting_out_and_preloaded_allocators_leave_malloc_alone(env: dict, expected: str) -> None:
    assert expected in keep_freed_memory(env)
