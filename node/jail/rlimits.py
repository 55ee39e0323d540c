"""Layer 4 of the jail, part 1: resource limits (CPU seconds, address space, file size,
open files, no core dumps) applied to the party process before the job runs."""

from __future__ import annotations

import errno
import math
import os
import resource
from typing import TYPE_CHECKING, Any

from node.jail.syscalls import (
    _reason,
)

if TYPE_CHECKING:
    from node.jail.lockdown import Limits

# -- rlimits --------------------------------------------------------------------------------

def _cap(value: int, hard: int) -> int:
    """Never raise a hard limit (root could, but a lower one was set on purpose)."""
    return value if hard == resource.RLIM_INFINITY else min(value, hard)


def _set_limit(res: int, soft: int, hard: int) -> tuple[int, int]:
    _, old_hard = resource.getrlimit(res)
    hard = _cap(hard, old_hard)
    soft = min(_cap(soft, old_hard), hard)
    resource.setrlimit(res, (soft, hard))
    return resource.getrlimit(res)


def _vm_size() -> int:
    with open("/proc/self/status", "rb") as f:
        for line in f:
            if line.startswith(b"VmSize:"):
                return int(line.split()[1]) * 1024
    raise OSError(errno.ENOENT, "no VmSize in /proc/self/status")


def _apply_rlimits(limits: Limits) -> dict[str, Any]:
    out: dict[str, Any] = {}

    def step(name: str, fn: Any) -> None:
        try:
            out[name] = fn()
        except Exception as exc:  # noqa: BLE001 - reported, never fatal
            out[name] = f"not set ({_reason(exc)})"

    def cpu() -> tuple[int, int]:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        soft = math.ceil(usage.ru_utime + usage.ru_stime) + max(0, int(limits.cpu_s))
        return _set_limit(resource.RLIMIT_CPU, soft, soft + 1)

    def address_space() -> tuple[int, int]:
        total = _vm_size() + max(0, int(limits.address_space_bytes))
        return _set_limit(resource.RLIMIT_AS, total, total)

    def fsize() -> tuple[int, int]:
        n = max(0, int(limits.file_size_bytes))
        return _set_limit(resource.RLIMIT_FSIZE, n, n)

    def nofile() -> tuple[int, int]:
        n = limits.open_files
        if n is None:
            fds = [int(f) for f in os.listdir("/proc/self/fd")]
            n = max(len(fds), max(fds) + 1) + 16
        return _set_limit(resource.RLIMIT_NOFILE, int(n), int(n))

    step("RLIMIT_CPU", cpu)
    step("RLIMIT_AS", address_space)
    step("RLIMIT_FSIZE", fsize)
    step("RLIMIT_NOFILE", nofile)
    step("RLIMIT_CORE", lambda: _set_limit(resource.RLIMIT_CORE, 0, 0))
    return out


