"""Layer 4 of the jail: confine the party process with what the OS offers, before the job runs.

The parts live apart: node/jail/rlimits.py, landlock.py and seccomp.py (with the sealing of
listening sockets), over node/jail/syscalls.py; this module orders them and reports.

The trusted bootstrap of a party calls ``lock_down(limits)`` once, after ``crypten.init()`` has
made every process group (the gloo connections exist) and after the approved assets are in
memory, and before the job's code runs. Everything here is irreversible for the process.

In order (each step is used where the kernel has it; each failure is reported in the returned
dict, never raised, so a party on an older kernel still runs and says what it lacks):

1. rlimits: RLIMIT_CPU and RLIMIT_AS count from the moment of lock-down (the process has
   already spent CPU on imports and mapped about a gigabyte for torch, its libraries, its
   threads' stacks and malloc arenas), RLIMIT_FSIZE (binds every regular file the process
   writes, inherited fds included, e.g. a stderr log), RLIMIT_NOFILE, and RLIMIT_CORE = 0 (no
   core file with secret shares in it). RLIMIT_NPROC is not used: it does not bind root and it
   counts every process of the uid; seccomp stops process creation instead.
2. ``PR_SET_NO_NEW_PRIVS`` and ``PR_SET_DUMPABLE`` = 0 (no ptrace, no /proc/<pid>/mem for
   other processes of the same uid), and every listening socket the process still has
   (each gloo device) gets a locked drop-all socket filter, so that no new
   connection can reach it (see ``_seal_listeners``: otherwise a stranger's connect makes gloo
   call accept(), which seccomp refuses, and gloo aborts the party).
3. Landlock (Linux 5.13+): a ruleset that handles every filesystem right the kernel's ABI knows,
   TCP bind/connect on ABI 4+ (with no port rule: no new TCP bind or connect at all), and
   abstract-unix-socket and signal scoping on ABI 6+; read-only access (read files, list
   directories; no execute) beneath each of ``limits.read_only_paths``; no writes anywhere.
   Landlock applies to the calling thread only, and torch and gloo threads already exist. With
   ABI 8+ the kernel applies it to every thread (LANDLOCK_RESTRICT_SELF_TSYNC). Before that,
   on x86_64, every other thread restricts itself the way glibc's setxid and libpsx do it: a
   real-time signal whose handler (65 bytes of machine code, no libc, no Python, so it is
   async-signal-safe and needs no GIL) calls prctl(NO_NEW_PRIVS) and
   landlock_restrict_self() with the same ruleset. Elsewhere only the calling thread and the
   threads it starts later are confined, and the result says so.
4. seccomp (last: the filter would otherwise have to allow the steps above), applied to every
   thread at once (SECCOMP_FILTER_FLAG_TSYNC). A *default-allow filter with a denylist*: a
   default-deny allowlist is too brittle across torch, gloo and glibc versions (each release
   may use a syscall we never saw). Denied with EPERM: new sockets and connections (socket,
   socketpair, connect, bind, listen, accept, accept4; gloo's existing connections keep
   working: send/recv/poll/epoll on existing fds are untouched), process creation (fork,
   vfork, clone without CLONE_THREAD or with a namespace flag; clone3 gets ENOSYS so glibc
   falls back to clone, whose flags a filter can read: threads still work), exec, ptrace and
   cross-process memory access, signals to other processes (kill/tgkill/rt_sigqueueinfo only to
   this process), raising rlimits (setrlimit; prlimit64 only to read), kernel modules, kexec,
   mount and namespaces, bpf, perf, keyrings, userfaultfd, io_uring, handle-based opens,
   personality, clock and host settings, reboot, swap, scheduling priority, and file mutation
   (unlink, rename, mkdir, rmdir, link, symlink, mknod, chmod, chown, xattrs, utime, truncate,
   ftruncate, fallocate, creat; open/openat with a write, create, truncate or append flag;
   openat2 gets ENOSYS, as its flags sit behind a pointer). The file rules repeat Landlock's on
   purpose: they hold on kernels without Landlock and in threads Landlock could not reach.
   Calls from a foreign ABI (i386 via int 0x80, x32) are refused whole. Supported: x86_64 and
   aarch64; elsewhere seccomp is reported unsupported.

``available()`` says what this machine offers, without applying anything.
"""

from __future__ import annotations

import os
import platform
import resource
import sys
import sysconfig
from dataclasses import dataclass, field

from node.jail.landlock import _apply_landlock, _landlock_abi, _other_threads_mode
from node.jail.rlimits import _apply_rlimits
from node.jail.seccomp import _apply_seccomp, _seal_listeners, _seccomp_status
from node.jail.syscalls import (
    _MACHINE,
    _PR_GET_NO_NEW_PRIVS,
    _PR_SET_DUMPABLE,
    _PR_SET_NO_NEW_PRIVS,
    _prctl,
    _reason,
)

__all__ = ["Limits", "lock_down", "available", "default_read_only_paths"]


def default_read_only_paths() -> list[str]:
    """What a locked party needs to keep reading: the interpreter and its libraries, Parley's
    ``node`` and ``resources`` packages, /dev/null and /dev/urandom, and the CPU description
    (/sys/devices/system/cpu, /proc/cpuinfo) that torch's cpuinfo reads when it first picks
    vectorised kernels and glibc's get_nprocs() reads for thread counts; without it torch
    prints "Error in cpuinfo" and may fall back to slower kernels."""
    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    paths = {sys.prefix, sys.exec_prefix, os.path.join(repo, "node"),
             os.path.join(repo, "resources"), "/dev/null", "/dev/urandom",
             "/sys/devices/system/cpu", "/proc/cpuinfo"}
    for key in ("stdlib", "platstdlib", "purelib", "platlib"):
        value = sysconfig.get_paths().get(key)
        if value:
            paths.add(value)
    if getattr(sys, "frozen", False):  # the installed bundle: its executable holds the code
        paths.add(os.path.dirname(os.path.abspath(sys.executable)))
    return sorted(p for p in paths if os.path.exists(p))


@dataclass
class Limits:
    """What the job may still use once the party is locked down.

    ``cpu_s``: CPU seconds (all threads together) from lock-down on; past it the kernel sends
    SIGXCPU, and SIGKILL one second later. ``address_space_bytes``: address space the job may
    map on top of what the process has mapped at lock-down (torch alone maps about 1 GiB of
    virtual memory; each new thread reserves a stack and may get a 64 MiB malloc arena).
    ``file_size_bytes``: RLIMIT_FSIZE: no write past that offset in any regular file, including
    an inherited stderr log (0 = no writes to regular files at all; CPython ignores SIGXFSZ, so
    a write past it raises OSError(EFBIG)). ``open_files``: RLIMIT_NOFILE; None = the highest fd
    open now + 16. ``read_only_paths``: files and directories that stay readable (Landlock).
    """

    cpu_s: int
    address_space_bytes: int
    file_size_bytes: int
    open_files: int | None = None
    read_only_paths: list[str] = field(default_factory=default_read_only_paths)


# -- public API -----------------------------------------------------------------------------

def available() -> dict[str, object]:
    """What this machine offers, without applying anything."""
    abi = _landlock_abi()
    nnp: bool | str
    try:
        _prctl(_PR_GET_NO_NEW_PRIVS)
        nnp = True
    except OSError as exc:
        nnp = f"unavailable ({_reason(exc)})"
    return {
        "platform": sys.platform,
        "arch": _MACHINE,
        "kernel": platform.release(),
        "rlimits": [n for n in ("RLIMIT_CPU", "RLIMIT_AS", "RLIMIT_FSIZE", "RLIMIT_NOFILE",
                                "RLIMIT_CORE") if hasattr(resource, n)],
        "no_new_privs": nnp,
        "seccomp": _seccomp_status(),
        "landlock": abi,
        "landlock_other_threads": _other_threads_mode(abi) if isinstance(abi, int) else "n/a",
        "threads_now": len(os.listdir("/proc/self/task")) if os.path.isdir(
            "/proc/self/task") else None,
    }


def lock_down(limits: Limits) -> dict[str, object]:
    """Apply every confinement this OS offers; return what is active, e.g.
    ``{"rlimits": {"RLIMIT_CPU": (soft, hard), ...}, "no_new_privs": True, "dumpable": False,
    "listeners_sealed": ["127.0.0.1:40455", ...], "landlock": 7, "landlock_threads": "all
    (...)", "seccomp": True, "complete": True}``. A mechanism that could not be applied has a
    string with the reason instead, and ``complete`` is True only when every one is fully in
    force (Landlock in every thread included). Never raises: the caller decides whether a
    party with less than everything may run the job."""
    report: dict[str, object] = {"rlimits": _apply_rlimits(limits)}
    try:
        _prctl(_PR_SET_NO_NEW_PRIVS, 1)
        report["no_new_privs"] = True
    except Exception as exc:  # noqa: BLE001
        report["no_new_privs"] = f"not set ({_reason(exc)})"
    try:
        _prctl(_PR_SET_DUMPABLE, 0)
        report["dumpable"] = False
    except Exception as exc:  # noqa: BLE001
        report["dumpable"] = f"still dumpable ({_reason(exc)})"
    try:
        report.update(_seal_listeners())
    except Exception as exc:  # noqa: BLE001
        report["listeners_sealed"] = f"not sealed ({_reason(exc)})"
    try:
        report.update(_apply_landlock(list(limits.read_only_paths)))
    except Exception as exc:  # noqa: BLE001
        report["landlock"] = f"not applied ({_reason(exc)})"
    try:
        report.update(_apply_seccomp())
    except Exception as exc:  # noqa: BLE001
        report["seccomp"] = f"not applied ({_reason(exc)})"
    rlimits = report["rlimits"]
    report["complete"] = bool(
        isinstance(rlimits, dict) and all(isinstance(v, tuple) for v in rlimits.values())
        and report["no_new_privs"] is True and report["seccomp"] is True
        and isinstance(report.get("landlock"), int)
        and str(report.get("landlock_threads", "")).startswith("all")
        and not report.get("listeners_not_sealed"))
    return report
