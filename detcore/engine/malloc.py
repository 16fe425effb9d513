"""Keep freed memory for reuse in training processes (glibc's malloc only; the trainer calls it).

A detection step on the CPU allocates and frees the same large buffers every iteration: feature
maps and their gradients, and the box head's RoI features (1024 RoIs x 256 x 7 x 7 floats, 51 MB).
With its defaults glibc serves every block above its mmap threshold (32 MB at most) with a fresh
``mmap`` and gives freed heap tops back to the kernel, so each step faults its working set back in
page by page. The MobileNet benchmark case took about 100,000 minor page faults per step and
spent a tenth of its CPU time in the kernel zeroing pages.

PyTorch's own CPU launcher (``python -m torch.backends.xeon.run_cpu``) answers this by preloading
jemalloc or tcmalloc with memory decay off. The same effect is one ``mallopt(3)`` call each on
glibc, with nothing to install or preload, so it also holds for a plain ``detcore train``:

* ``M_MMAP_MAX = 0``: large blocks come from the heap too, where freed ones are reused (glibc still
  falls back to ``mmap`` when the heap cannot grow);
* ``M_TRIM_THRESHOLD = -1`` (read by glibc as the largest size): the heap top is never given back.

The price: the process keeps its peak heap until it exits, as a CUDA caching allocator keeps GPU
memory. ``DETCORE_MALLOC=system`` keeps glibc's defaults. An allocator preloaded with
``LD_PRELOAD`` (jemalloc, tcmalloc) is left alone, and so is any libc but glibc.
"""
from __future__ import annotations

import ctypes
import logging
import os
import platform
from typing import Mapping

ENV = "DETCORE_MALLOC"
# from glibc's malloc.h
M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4

logger = logging.getLogger(__name__)
_done = False


def keep_freed_memory(environ: Mapping[str, str] | None = None) -> str:
    """Tune glibc's malloc of this process (once); the decision, in words, for the log."""
    global _done
    env = os.environ if environ is None else environ
    choice = env.get(ENV, "keep").strip().lower()
    if choice == "system":
        return f"malloc: glibc defaults ({ENV}=system)"
    if choice != "keep":
        message = f"malloc: {ENV}={env.get(ENV)!r} is not 'keep' or 'system'; glibc defaults kept"
        logger.warning("%s", message)  # the decision itself is logged at DEBUG; a bad setting is the user's to fix
        return message
    preload = env.get("LD_PRELOAD", "")
    if any(name in preload for name in ("jemalloc", "tcmalloc", "mimalloc")):
        return f"malloc: the preloaded allocator is used as it is (LD_PRELOAD={preload})"
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return "malloc: not glibc; the system allocator is used as it is"
    if _done:
        return "malloc: freed memory kept for reuse"
    try:
        libc = ctypes.CDLL("libc.so.6")
        ok = libc.mallopt(M_MMAP_MAX, 0) == 1 and libc.mallopt(M_TRIM_THRESHOLD, -1) == 1
    except (OSError, AttributeError) as exc:
        return f"malloc: glibc's mallopt is not reachable ({exc}); defaults kept"
    if not ok:
        return "malloc: glibc refused mallopt; defaults kept"
    _done = True
    return (f"malloc: freed memory kept for reuse (no mmap for large blocks, no trimming; "
            f"{ENV}=system keeps glibc's defaults)")
