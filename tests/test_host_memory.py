"""Tests for ihc_jax.host_memory: the C heap's free pages go back to the OS."""

import ctypes
import mmap
import os
import platform
import subprocess
import sys

import pytest

from ihc_jax import host_memory


def _rss_mb() -> float:
  with open("/proc/self/status") as f:
    for line in f:
      if line.startswith("VmRSS:"):
        return int(line.split()[1]) / 1024
  raise AssertionError("no VmRSS in /proc/self/status")


@pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc",
                    reason="malloc_trim and /proc/self/status are glibc/Linux only")
def test_release_free_heap_returns_fragmented_free_pages():
  # 64 KiB blocks sit under glibc's mmap threshold, so they come from the
  # heap. Freeing every other one leaves 64 MiB of free blocks between live
  # ones, which glibc's own trimming (the heap's top only) cannot return.
  libc = ctypes.CDLL(None)
  libc.malloc.restype = ctypes.c_void_p
  libc.malloc.argtypes = [ctypes.c_size_t]
  libc.free.argtypes = [ctypes.c_void_p]
  size, count = 64 * 1024, 2048
  blocks = [libc.malloc(size) for _ in range(count)]
  assert all(blocks)
  try:
    for block in blocks:
      ctypes.memset(block, 1, size)  # resident
    for block in blocks[::2]:
      libc.free(block)
    before = _rss_mb()
    assert host_memory.release_free_heap()
    released = before - _rss_mb()
  finally:
    for block in blocks[1::2]:
      libc.free(block)
  # 64 MiB were freed; the pages holding a block's malloc header stay.
  assert released > 32, f"only {released:.1f} MiB returned"


def test_release_free_heap_is_a_no_op_without_malloc_trim(monkeypatch):
  monkeypatch.setattr(host_memory, "_malloc_trim", lambda: None)
  assert host_memory.release_free_heap() is False


@pytest.mark.skipif(platform.system() != "Linux",
                    reason="counts checked against Linux's demand paging")
def test_minor_page_faults_counts_first_touches_of_fresh_memory():
  size = 64 * 1024 * 1024
  before = host_memory.minor_page_faults()
  with mmap.mmap(-1, size) as fresh:  # anonymous: no page is mapped in yet
    after_map = host_memory.minor_page_faults()
    for offset in range(0, size, mmap.PAGESIZE):
      fresh[offset] = 1
    after_touch = host_memory.minor_page_faults()
  assert isinstance(before, int) and before <= after_map <= after_touch
  # One fault per 4 KiB page, or per 2 MiB page where transparent huge
  # pages back the mapping: at least 32 for 64 MiB either way.
  assert after_touch - after_map >= size // (2 * 1024 * 1024)


def test_minor_page_faults_is_none_without_getrusage(monkeypatch):
  monkeypatch.setattr(host_memory, "resource", None)
  assert host_memory.minor_page_faults() is None


@pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc",
                    reason="GLIBC_TUNABLES are glibc's")
def test_keep_freed_memory_tunables_stop_the_refaulting_of_large_buffers():
  # A fresh process per policy: glibc reads its tunables at start-up only.
  # Each allocates, touches and frees a 64 MiB buffer three times; by
  # default every round maps it fresh (545 faults a round here, numpy asking
  # for 2 MiB pages), under the tunables the later rounds reuse the heap's
  # pages (0 here).
  script = (
      "import numpy as np\n"
      "from ihc_jax import host_memory\n"
      "faults = []\n"
      "for _ in range(3):\n"
      "  before = host_memory.minor_page_faults()\n"
      "  np.ones(16 * 1024 * 1024, np.float32).sum()\n"
      "  faults.append(host_memory.minor_page_faults() - before)\n"
      "print(faults[-1])\n")

  def last_round_faults(tunables):
    env = dict(os.environ, GLIBC_TUNABLES=tunables)
    out = subprocess.run([sys.executable, "-c", script], env=env, check=True,
                         capture_output=True, text=True)
    return int(out.stdout.split()[-1])

  assert last_round_faults("") >= 16 * 1024 * 1024 * 4 // (2 * 1024 * 1024)
  assert last_round_faults(host_memory.KEEP_FREED_MEMORY_TUNABLES) < 100
