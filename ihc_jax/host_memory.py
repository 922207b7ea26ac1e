"""Give freed host memory back to the operating system after a compilation.

XLA's CPU compiler allocates its working memory through the C library's
`malloc`, and so do the buffers of a CPU executable's run. glibc keeps what
they free in its heap for reuse rather than returning it: freed blocks in
the middle of the heap stay resident, and after the first large free glibc
raises its mmap threshold, so later large buffers come from the heap too.
A process that compiles several networks one after another therefore holds
the leftovers of every compilation, and its peak memory grows with each.
`malloc_trim(0)` returns every free page of the heap to the kernel.

`Pipeline` calls `release_free_heap` after each compilation (never per call:
the pages a run needs would then be faulted in again on every call).
Peak RSS of a fresh process running the official test.py once at 256 px
(`python -m ihc_jax.bench official`'s memory run, benchmarks/RESULTS.md):
1.12 GB without, 0.84 GB with (the official PyTorch code: 1.05-1.16 GB).

Elsewhere than glibc (macOS, musl) there is no `malloc_trim`, and this does
nothing.
"""

from __future__ import annotations

import ctypes
import functools
from collections.abc import Callable


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
  try:
    libc = ctypes.CDLL(None)
  except OSError:
    return None
  trim = getattr(libc, "malloc_trim", None)
  if trim is not None:
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
  return trim


def release_free_heap() -> bool:
  """Returns the C heap's free pages to the OS (glibc's `malloc_trim(0)`).

  Returns:
    True if the C library has `malloc_trim` (and it ran), False otherwise.
  """
  trim = _malloc_trim()
  if trim is None:
    return False
  trim(0)
  return True
