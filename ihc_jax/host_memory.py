"""Host memory and the C library: give freed memory back to the operating
system after a compilation, and count the page faults of a call.

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

The other side of glibc's policy: a run's buffers above its mmap threshold
(at most 32 MiB) are mapped fresh on every call and unmapped when freed, so
their pages are faulted in again each time (`minor_page_faults` counts
them). On the 2-core EPYC VM of 7 December 2026, per call at 256 px: about
240,000 minor faults (0.9 GiB of 4 KiB pages) for the official test.py,
110,000-180,000 for the IHN training step and 105,000 for the colour step.
Keeping freed memory in one heap instead
(`KEEP_FREED_MEMORY_TUNABLES` as `GLIBC_TUNABLES` in the environment of a
fresh process) removes nearly all of them, but moves wall time only
1.00-1.025x (fresh processes alternated, medians of 6: test.py 7.87 ->
7.68 s, IHN step 2.90 -> 2.91 s, colour step 1.89 -> 1.86 s; peak RSS
0.87 -> 0.91 GB), so the package leaves the C library's policy as it is. A benchmark of one
layer alone is another matter: there the faults can dominate (the IHN's
64 -> 64 detail conv forward, 17 MiB out: 36.6 ms with them, 24.6 ms
without).
"""

from __future__ import annotations

import ctypes
import functools
from collections.abc import Callable

try:
  import resource
except ImportError:  # not Unix
  resource = None

# glibc tunables under which freed memory stays mapped in one heap: one
# arena for every thread, no block of its own mapping, no trimming below 4 GiB.
KEEP_FREED_MEMORY_TUNABLES = ("glibc.malloc.arena_max=1:glibc.malloc.mmap_max=0:"
                              "glibc.malloc.trim_threshold=4294967296")


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


def minor_page_faults() -> int | None:
  """The process's minor page faults so far (pages the kernel mapped in
  without reading a disk: first touches of fresh memory), or None where
  `getrusage` has no such count (not Unix). Differences over a call count
  the pages its buffers faulted in."""
  if resource is None:
    return None
  return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
