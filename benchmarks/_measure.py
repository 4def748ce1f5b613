"""Shared measuring helpers for the benchmark scripts (run them from the repository root)."""

from __future__ import annotations

import os
import threading
import time

# glibc keeps freed blocks below its (adaptive, up to 32 MiB) mmap threshold in the heap, so after a warm-up the
# RSS no longer drops when tensors are freed and "peak minus base" under-counts. With a fixed 64 KiB threshold
# every tensor-sized block is its own mapping, returned on free: the RSS then follows live memory. It slows
# allocation a little, so benchmarks measure memory and time in separate processes.
EXACT_RSS_ENV = {"MALLOC_MMAP_THRESHOLD_": "65536", "MALLOC_TRIM_THRESHOLD_": "0"}


class RssSampler:
    """Highest resident set size of this process while the context is open, sampled every millisecond."""

    def __init__(self):
        self.peak = self.current()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    @staticmethod
    def current() -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    def _poll(self):
        while not self._stop.wait(0.001):
            self.peak = max(self.peak, self.current())

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.current())


def time_and_peak(fn, repeats: int, device: str) -> tuple[float, int]:
    """Call `fn` once to warm up, then `repeats` times: (best seconds, peak bytes added by the timed calls).

    CPU: highest RSS seen by `RssSampler` minus the RSS before the timed calls; CUDA: `max_memory_allocated`
    minus the allocation before them.
    """
    import torch

    cuda = device.startswith("cuda")
    fn()  # warm-up (kernels, caches, optimizer state)
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated() if cuda else RssSampler.current()
    times = []
    with RssSampler() as sampler:
        for _ in range(repeats):
            start = time.perf_counter()
            fn()
            if cuda:
                torch.cuda.synchronize()
            times.append(time.perf_counter() - start)
    peak = torch.cuda.max_memory_allocated() if cuda else sampler.peak
    return min(times), peak - base


def round_robin(fns: dict, rounds: int, device: str) -> dict:
    """Call every fn once to warm up, then `rounds` times in turn: {key: best seconds}.

    Interleaving makes a shared machine's drifting speed hit every fn alike, so their ratios hold.
    """
    import torch

    best = dict.fromkeys(fns, float("inf"))
    for round_ in range(rounds + 1):  # round 0 is the warm-up
        for key, fn in fns.items():
            start = time.perf_counter()
            fn()
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            if round_:
                best[key] = min(best[key], time.perf_counter() - start)
    return best
