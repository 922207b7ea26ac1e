"""Tests for ihc_jax.host_memory: the C heap's free pages go back to the OS."""

import ctypes
import platform

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
