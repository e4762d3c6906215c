"""What a process can learn of its machine: the CPU's model and vector extensions (speeds differ several times
between machines, so every benchmark prints them), an installed or preloaded tcmalloc, the kernel's share of CPU time
and the page faults between two readings. Nothing here loads Keras or changes the process (glibc's tuning, which does:
``runtime.tune_allocator``)."""

from __future__ import annotations

import functools
import os

TCMALLOC_NAMES = ("libtcmalloc_minimal.so.4", "libtcmalloc.so.4")


def tcmalloc_library() -> str | None:
    """Path of an installed tcmalloc (Debian/Ubuntu: ``apt install libtcmalloc-minimal4``), or None.

    Preloaded (``LD_PRELOAD``), it replaces glibc's allocator for the whole process (``make demo
    TCMALLOC=PATH``); ``benchmarks/train_throughput.py --allocator all`` measures it beside glibc as
    it comes and tuned.
    """
    import glob

    for name in TCMALLOC_NAMES:
        for folder in ("/usr/lib/*-linux-gnu", "/usr/lib64", "/usr/lib", "/usr/local/lib"):
            found = sorted(glob.glob(f"{folder}/{name}"))
            if found:
                return found[0]
    return None


def preloaded_allocator() -> str:
    """'tcmalloc' when tcmalloc is preloaded into this process, else 'glibc'."""
    return "tcmalloc" if "tcmalloc" in os.environ.get("LD_PRELOAD", "") else "glibc"


@functools.cache
def cpu_flags() -> tuple[str, frozenset]:
    """The CPU's model name and its feature flags, as Linux lists them in /proc/cpuinfo (elsewhere:
    'unknown CPU' and no flags); read once per process (every ONNX Runtime session asks)."""
    model, flags = "unknown CPU", set()
    try:
        for line in open("/proc/cpuinfo").read().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                model = value.strip()
            elif key.strip() == "flags":
                flags = set(value.split())
    except OSError:
        pass
    return model, frozenset(flags)


def cpu_description() -> str:
    """The CPU model and its vector extensions (speeds differ several times between machines)."""
    model, flags = cpu_flags()
    wanted = ("sse4_2", "avx", "avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_bf16")
    return f"{model}, {os.cpu_count()} cores, vector extensions: {' '.join(f for f in wanted if f in flags) or 'none listed'}"


def kernel_share_and_faults(start, end) -> tuple[float, int]:
    """Between two ``resource.getrusage`` readings: the kernel's share of user + system CPU time, and the
    minor page faults (memory handed back to the kernel and faulted in again shows in both)."""
    user, system = end.ru_utime - start.ru_utime, end.ru_stime - start.ru_stime
    return system / max(user + system, 1e-9), end.ru_minflt - start.ru_minflt
