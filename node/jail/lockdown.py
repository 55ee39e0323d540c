"""Layer 4 of the jail: confine the party process with what the OS offers, before the job runs.

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

import ctypes
import errno
import math
import os
import platform
import resource
import socket
import stat
import struct
import sys
import sysconfig
import threading
import time
from dataclasses import dataclass, field
from typing import Any

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


# -- libc, syscalls -------------------------------------------------------------------------

_MACHINE = platform.machine().lower()
_ARCH = {"x86_64": "x86_64", "amd64": "x86_64", "aarch64": "aarch64", "arm64": "aarch64"}.get(
    _MACHINE)
_AUDIT_ARCH = {"x86_64": 0xC000003E, "aarch64": 0xC00000B7}
_X32_SYSCALL_BIT = 0x40000000

# Syscall numbers. Those from 424 on are the same on every architecture.
_NR: dict[str, dict[str, int]] = {
    "x86_64": {
        "socket": 41, "socketpair": 53, "connect": 42, "bind": 49, "listen": 50, "accept": 43,
        "accept4": 288, "clone": 56, "fork": 57, "vfork": 58, "execve": 59, "execveat": 322,
        "ptrace": 101, "process_vm_readv": 310, "process_vm_writev": 311, "kcmp": 312,
        "kexec_load": 246, "kexec_file_load": 320, "init_module": 175, "finit_module": 313,
        "delete_module": 176, "mount": 165, "umount2": 166, "pivot_root": 155, "chroot": 161,
        "setns": 308, "unshare": 272, "bpf": 321, "perf_event_open": 298, "keyctl": 250,
        "add_key": 248, "request_key": 249, "userfaultfd": 323, "open_by_handle_at": 304,
        "name_to_handle_at": 303, "personality": 135, "fanotify_init": 300,
        "move_pages": 279, "migrate_pages": 256, "acct": 163, "swapon": 167, "swapoff": 168,
        "reboot": 169, "sethostname": 170, "setdomainname": 171, "iopl": 172, "ioperm": 173,
        "settimeofday": 164, "clock_settime": 227, "adjtimex": 159, "clock_adjtime": 305,
        "quotactl": 179, "syslog": 103, "vhangup": 153, "uselib": 134, "modify_ldt": 154,
        "_sysctl": 156, "lookup_dcookie": 212, "capset": 126, "setrlimit": 160,
        "sched_setparam": 142, "sched_setscheduler": 144, "sched_setattr": 314,
        "setpriority": 141, "ioprio_set": 251, "tkill": 200,
        "unlink": 87, "unlinkat": 263, "rename": 82, "renameat": 264, "renameat2": 316,
        "mkdir": 83, "mkdirat": 258, "rmdir": 84, "link": 86, "linkat": 265, "symlink": 88,
        "symlinkat": 266, "mknod": 133, "mknodat": 259, "chmod": 90, "fchmod": 91,
        "fchmodat": 268, "chown": 92, "fchown": 93, "lchown": 94, "fchownat": 260,
        "setxattr": 188, "lsetxattr": 189, "fsetxattr": 190, "removexattr": 197,
        "lremovexattr": 198, "fremovexattr": 199, "utime": 132, "utimes": 235,
        "futimesat": 261, "utimensat": 280, "truncate": 76, "ftruncate": 77,
        "fallocate": 285, "creat": 85,
        # inspected, not denied outright
        "open": 2, "openat": 257, "kill": 62, "tgkill": 234, "rt_sigqueueinfo": 129,
        "rt_tgsigqueueinfo": 297, "prlimit64": 302,
        # used by lock_down itself
        "prctl": 157, "seccomp": 317,
    },
    "aarch64": {  # asm-generic numbering; no legacy fork/open/unlink/... calls
        "socket": 198, "socketpair": 199, "connect": 203, "bind": 200, "listen": 201,
        "accept": 202, "accept4": 242, "clone": 220, "execve": 221, "execveat": 281,
        "ptrace": 117, "process_vm_readv": 270, "process_vm_writev": 271, "kcmp": 272,
        "kexec_load": 104, "kexec_file_load": 294, "init_module": 105, "finit_module": 273,
        "delete_module": 106, "mount": 40, "umount2": 39, "pivot_root": 41, "chroot": 51,
        "setns": 268, "unshare": 97, "bpf": 280, "perf_event_open": 241, "keyctl": 219,
        "add_key": 217, "request_key": 218, "userfaultfd": 282, "open_by_handle_at": 265,
        "name_to_handle_at": 264, "personality": 92, "fanotify_init": 262,
        "move_pages": 239, "migrate_pages": 238, "acct": 89, "swapon": 224, "swapoff": 225,
        "reboot": 142, "sethostname": 161, "setdomainname": 162, "settimeofday": 170,
        "clock_settime": 112, "adjtimex": 171, "clock_adjtime": 266, "quotactl": 60,
        "syslog": 116, "vhangup": 58, "lookup_dcookie": 18, "capset": 91, "setrlimit": 164,
        "sched_setparam": 118, "sched_setscheduler": 119, "sched_setattr": 274,
        "setpriority": 140, "ioprio_set": 30, "tkill": 130,
        "unlinkat": 35, "renameat": 38, "renameat2": 276, "mkdirat": 34, "linkat": 37,
        "symlinkat": 36, "mknodat": 33, "fchmod": 52, "fchmodat": 53, "fchown": 55,
        "fchownat": 54, "setxattr": 5, "lsetxattr": 6, "fsetxattr": 7, "removexattr": 14,
        "lremovexattr": 15, "fremovexattr": 16, "utimensat": 88, "truncate": 45,
        "ftruncate": 46, "fallocate": 47,
        "openat": 56, "kill": 129, "tgkill": 131, "rt_sigqueueinfo": 138,
        "rt_tgsigqueueinfo": 240, "prlimit64": 261,
        "prctl": 167, "seccomp": 277,
    },
}
_NR_COMMON = {
    "pidfd_send_signal": 424, "io_uring_setup": 425, "io_uring_enter": 426,
    "io_uring_register": 427, "open_tree": 428, "move_mount": 429, "fsopen": 430,
    "fsconfig": 431, "fsmount": 432, "fspick": 433, "pidfd_open": 434, "clone3": 435,
    "openat2": 437, "pidfd_getfd": 438, "process_madvise": 440, "mount_setattr": 442,
    "quotactl_fd": 443, "landlock_create_ruleset": 444, "landlock_add_rule": 445,
    "landlock_restrict_self": 446, "fchmodat2": 452, "setxattrat": 463, "removexattrat": 466,
    "open_tree_attr": 467, "file_setattr": 469,
}
for _table in _NR.values():
    _table.update(_NR_COMMON)

# Denied outright with EPERM (where the architecture has them).
DENIED_SYSCALLS: tuple[str, ...] = (
    # new sockets and connections
    "socket", "socketpair", "connect", "bind", "listen", "accept", "accept4",
    # new processes and programs
    "fork", "vfork", "execve", "execveat",
    # other processes
    "ptrace", "process_vm_readv", "process_vm_writev", "kcmp", "pidfd_open", "pidfd_getfd",
    "pidfd_send_signal", "tkill", "process_madvise", "move_pages", "migrate_pages",
    # the kernel and the machine
    "kexec_load", "kexec_file_load", "init_module", "finit_module", "delete_module", "bpf",
    "perf_event_open", "keyctl", "add_key", "request_key", "userfaultfd", "io_uring_setup",
    "io_uring_enter", "io_uring_register", "open_by_handle_at", "name_to_handle_at",
    "personality", "fanotify_init", "acct", "swapon", "swapoff", "reboot", "sethostname",
    "setdomainname", "iopl", "ioperm", "settimeofday", "clock_settime", "adjtimex",
    "clock_adjtime", "quotactl", "quotactl_fd", "syslog", "vhangup", "uselib", "modify_ldt",
    "_sysctl", "lookup_dcookie", "capset", "setrlimit", "sched_setparam",
    "sched_setscheduler", "sched_setattr", "setpriority", "ioprio_set",
    # mounts and namespaces
    "mount", "umount2", "pivot_root", "chroot", "setns", "unshare", "open_tree", "move_mount",
    "fsopen", "fsconfig", "fsmount", "fspick", "mount_setattr", "open_tree_attr",
    # file mutation
    "unlink", "unlinkat", "rename", "renameat", "renameat2", "mkdir", "mkdirat", "rmdir",
    "link", "linkat", "symlink", "symlinkat", "mknod", "mknodat", "chmod", "fchmod",
    "fchmodat", "fchmodat2", "chown", "fchown", "lchown", "fchownat", "setxattr", "lsetxattr",
    "fsetxattr", "removexattr", "lremovexattr", "fremovexattr", "setxattrat", "removexattrat",
    "file_setattr", "utime", "utimes", "futimesat", "utimensat", "truncate", "ftruncate",
    "fallocate", "creat",
)
# Answered ENOSYS, so that glibc falls back to a call whose arguments the filter can read.
ENOSYS_SYSCALLS: tuple[str, ...] = ("clone3", "openat2")

_CLONE_THREAD = 0x00010000
_CLONE_NS_FLAGS = 0x7E020000  # NEWNS, NEWCGROUP, NEWUTS, NEWIPC, NEWUSER, NEWPID, NEWNET
_O_WRITE_FLAGS = 0o1 | 0o2 | 0o100 | 0o1000 | 0o2000  # WRONLY, RDWR, CREAT, TRUNC, APPEND

_PR_SET_DUMPABLE = 4
_PR_GET_SECCOMP = 21
_PR_SET_NO_NEW_PRIVS = 38
_PR_GET_NO_NEW_PRIVS = 39
_SECCOMP_SET_MODE_FILTER = 1
_SECCOMP_GET_ACTION_AVAIL = 2
_SECCOMP_FILTER_FLAG_TSYNC = 1
_SECCOMP_RET_ALLOW = 0x7FFF0000
_SECCOMP_RET_ERRNO = 0x00050000

_libc: ctypes.CDLL | None = None


def _lib() -> ctypes.CDLL:
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
        _libc.syscall.restype = ctypes.c_long
        _libc.prctl.restype = ctypes.c_int
        _libc.mmap.restype = ctypes.c_void_p
        _libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int,
                               ctypes.c_int, ctypes.c_long]
        _libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    return _libc


def _syscall(name: str, *args: Any) -> int:
    """Raw syscall; returns the result or raises OSError with the errno."""
    if _ARCH is None:
        raise OSError(errno.ENOSYS, f"unsupported architecture {_MACHINE}")
    libc = _lib()
    ctypes.set_errno(0)
    rv = libc.syscall(ctypes.c_long(_NR[_ARCH][name]), *args)
    if rv == -1:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return int(rv)


def _prctl(option: int, arg2: int = 0) -> int:
    libc = _lib()
    ctypes.set_errno(0)
    rv = libc.prctl(ctypes.c_int(option), ctypes.c_ulong(arg2), ctypes.c_ulong(0),
                    ctypes.c_ulong(0), ctypes.c_ulong(0))
    if rv == -1:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return int(rv)


def _reason(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.errno is not None:
        return f"{errno.errorcode.get(exc.errno, exc.errno)}: {exc.strerror}"
    return f"{type(exc).__name__}: {exc}"


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


# -- listening sockets ----------------------------------------------------------------------

_SO_ATTACH_FILTER = 26
_SO_ACCEPTCONN = 30
_SO_LOCK_FILTER = 44
_DROP_ALL = (ctypes.c_uint64 * 1)(0x0000000000000006)  # one BPF insn: {BPF_RET|BPF_K, 0, 0, 0}


def _seal_listeners() -> dict[str, Any]:
    """Let no new connection reach a listening socket this process already has.

    Each gloo device keeps a listening socket after the rendezvous (the rendezvous itself is
    served by rank 0's node, node/rendezvous.py). seccomp refuses accept() once locked, and gloo
    aborts the whole process when accept() fails with anything but EAGAIN, so anyone able to
    reach such a port could kill the party by connecting. A socket filter that drops every
    packet, attached to the listener and locked (SO_LOCK_FILTER: the job cannot detach it),
    makes the kernel drop incoming SYNs before they reach the backlog: the caller's connect
    times out, nothing wakes gloo, and the established connections (separate sockets) are untouched.
    """
    prog = struct.pack("HxxxxxxQ", 1, ctypes.addressof(_DROP_ALL))
    sealed, failed = [], {}
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        try:
            if not os.readlink(f"/proc/self/fd/{fd}").startswith("socket:"):
                continue
            dup = os.dup(fd)
        except OSError:
            continue  # gone meanwhile, or the listing's own fd
        try:
            sock = socket.socket(fileno=dup)
        except OSError:
            os.close(dup)
            continue
        with sock:
            if sock.family not in (socket.AF_INET, socket.AF_INET6):
                continue  # the filter stops TCP SYNs; torch and gloo listen on TCP only
            try:
                if not sock.getsockopt(socket.SOL_SOCKET, _SO_ACCEPTCONN):
                    continue
            except OSError:
                continue
            try:
                where = sock.getsockname()
                if isinstance(where, tuple):
                    host = f"[{where[0]}]" if ":" in where[0] else where[0]
                    label = f"{host}:{where[1]}"
                else:
                    label = repr(where)
                sock.setsockopt(socket.SOL_SOCKET, _SO_ATTACH_FILTER, prog)
                sock.setsockopt(socket.SOL_SOCKET, _SO_LOCK_FILTER, 1)
                sealed.append(label)
            except OSError as exc:
                failed[str(fd)] = _reason(exc)
    out: dict[str, Any] = {"listeners_sealed": sealed}
    if failed:
        out["listeners_not_sealed"] = failed
    return out


# -- Landlock -------------------------------------------------------------------------------

_LL_CREATE_RULESET_VERSION = 1
_LL_RULE_PATH_BENEATH = 1
_LL_RESTRICT_SELF_TSYNC = 1 << 3  # ABI 8
_LL_FS = {
    "EXECUTE": 1 << 0, "WRITE_FILE": 1 << 1, "READ_FILE": 1 << 2, "READ_DIR": 1 << 3,
    "REMOVE_DIR": 1 << 4, "REMOVE_FILE": 1 << 5, "MAKE_CHAR": 1 << 6, "MAKE_DIR": 1 << 7,
    "MAKE_REG": 1 << 8, "MAKE_SOCK": 1 << 9, "MAKE_FIFO": 1 << 10, "MAKE_BLOCK": 1 << 11,
    "MAKE_SYM": 1 << 12, "REFER": 1 << 13, "TRUNCATE": 1 << 14, "IOCTL_DEV": 1 << 15,
}
_LL_NET_BIND_TCP = 1 << 0
_LL_NET_CONNECT_TCP = 1 << 1
_LL_SCOPE_ABSTRACT_UNIX_SOCKET = 1 << 0
_LL_SCOPE_SIGNAL = 1 << 1


class _RulesetAttr(ctypes.Structure):
    _fields_ = [("handled_access_fs", ctypes.c_uint64),
                ("handled_access_net", ctypes.c_uint64),
                ("scoped", ctypes.c_uint64)]


class _PathBeneathAttr(ctypes.Structure):
    _pack_ = 1
    _fields_ = [("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]


def _landlock_abi() -> int | str:
    """The kernel's Landlock ABI version, or why there is none."""
    if not sys.platform.startswith("linux"):
        return f"not Linux ({sys.platform})"
    if _ARCH is None:
        return f"syscall numbers unknown on {_MACHINE}"
    try:
        return _syscall("landlock_create_ruleset", None, ctypes.c_size_t(0),
                        ctypes.c_uint32(_LL_CREATE_RULESET_VERSION))
    except OSError as exc:
        if exc.errno == errno.ENOSYS:
            return "not in this kernel (ENOSYS: Linux < 5.13 or CONFIG_SECURITY_LANDLOCK off)"
        if exc.errno == errno.EOPNOTSUPP:
            return "disabled at boot (EOPNOTSUPP: 'landlock' missing from the lsm= list)"
        return f"unavailable ({_reason(exc)})"


def _fs_rights(abi: int) -> int:
    handled = (1 << 13) - 1  # ABI 1: EXECUTE .. MAKE_SYM
    if abi >= 2:
        handled |= _LL_FS["REFER"]
    if abi >= 3:
        handled |= _LL_FS["TRUNCATE"]
    if abi >= 5:
        handled |= _LL_FS["IOCTL_DEV"]
    return handled


def _other_threads_mode(abi: int) -> str:
    if abi >= 8:
        return "kernel (LANDLOCK_RESTRICT_SELF_TSYNC)"
    if _ARCH == "x86_64":
        return "signal broadcast"
    return "none"


class _Broadcast:
    """Run prctl(NO_NEW_PRIVS) + landlock_restrict_self(fd, 0) in every other thread, from a
    real-time signal handler written in machine code (x86_64 only)."""

    def __init__(self, ruleset_fd: int) -> None:
        libc = _lib()
        page = 4096
        # Two pages, kept for good (a late signal may still run the handler): the code, made
        # read+execute once written (never writable and executable at once), then the
        # counters, read+write: [0] handlers run, [1] landlock_restrict_self failures.
        mem = libc.mmap(None, 2 * page, 0x1 | 0x2, 0x02 | 0x20, -1, 0)  # RW, PRIVATE|ANON
        if mem in (None, ctypes.c_void_p(-1).value):
            raise OSError(ctypes.get_errno(), "mmap failed")
        self.counters = mem + page
        code = b"".join([
            b"\xf3\x0f\x1e\xfa",  # endbr64 (a valid indirect-branch target under CET/IBT)
            b"\xb8" + struct.pack("<I", _NR["x86_64"]["prctl"]),  # mov eax, SYS_prctl
            b"\xbf" + struct.pack("<I", _PR_SET_NO_NEW_PRIVS),  # mov edi, 38
            b"\xbe\x01\x00\x00\x00",  # mov esi, 1
            b"\x31\xd2\x4d\x31\xd2\x4d\x31\xc0",  # xor edx,edx; xor r10,r10; xor r8,r8
            b"\x0f\x05",  # syscall
            b"\xb8" + struct.pack("<I", _NR_COMMON["landlock_restrict_self"]),
            b"\xbf" + struct.pack("<I", ruleset_fd),  # mov edi, ruleset_fd
            b"\x31\xf6",  # xor esi, esi
            b"\x0f\x05",  # syscall
            b"\x48\xba" + struct.pack("<Q", self.counters),  # movabs rdx, counters
            b"\x85\xc0\x74\x04",  # test eax, eax; jz +4
            b"\xf0\xff\x42\x04",  # lock inc dword [rdx+4]
            b"\xf0\xff\x02",  # lock inc dword [rdx]
            b"\xc3",  # ret
        ])
        ctypes.memmove(mem, code, len(code))
        if libc.mprotect(mem, page, 0x1 | 0x4) != 0:  # R+X, never W+X
            raise OSError(ctypes.get_errno(), "mprotect failed")
        self.handler = mem

    def _count(self, i: int) -> int:
        return ctypes.c_uint32.from_address(self.counters + 4 * i).value

    def run(self, timeout: float = 2.0) -> dict[str, Any]:
        libc = _lib()
        sig = _free_rt_signal()

        class SigAction(ctypes.Structure):
            _fields_ = [("handler", ctypes.c_void_p), ("mask", ctypes.c_ulong * 16),
                        ("flags", ctypes.c_int), ("restorer", ctypes.c_void_p)]

        act, old = SigAction(), SigAction()
        act.handler = self.handler
        act.flags = 0x10000000  # SA_RESTART; glibc adds SA_RESTORER
        if libc.sigaction(sig, ctypes.byref(act), ctypes.byref(old)) != 0:
            raise OSError(ctypes.get_errno(), "sigaction failed")
        me, pid = threading.get_native_id(), os.getpid()
        signalled: set[int] = set()
        try:
            deadline = time.monotonic() + timeout
            for _ in range(10):  # until no thread appears that was not signalled
                fresh = {int(t) for t in os.listdir("/proc/self/task")} - signalled - {me}
                if not fresh:
                    break
                for tid in fresh:
                    ctypes.set_errno(0)
                    if libc.syscall(ctypes.c_long(_NR["x86_64"]["tgkill"]), pid, tid, sig) == 0:
                        signalled.add(tid)
                while self._count(0) < len(signalled) and time.monotonic() < deadline:
                    time.sleep(0.001)
        finally:
            ign = SigAction()
            ign.handler = 1  # SIG_IGN: discards a signal still pending in a blocked thread
            libc.sigaction(sig, ctypes.byref(ign), None)
        return {"signalled": len(signalled), "confirmed": self._count(0),
                "failed": self._count(1)}


def _free_rt_signal() -> int:
    libc = _lib()
    lo, hi = libc.__libc_current_sigrtmin(), libc.__libc_current_sigrtmax()
    buf = ctypes.create_string_buffer(256)
    for sig in range(hi - 1, lo - 1, -1):
        if libc.sigaction(sig, None, buf) == 0 and ctypes.c_void_p.from_buffer(buf).value in (
                None, 0):
            return sig
    raise OSError(errno.EBUSY, "no unused real-time signal")


def _apply_landlock(paths: list[str]) -> dict[str, Any]:
    abi = _landlock_abi()
    if isinstance(abi, str):
        return {"landlock": abi}
    out: dict[str, Any] = {}
    attr = _RulesetAttr(handled_access_fs=_fs_rights(abi))
    size = 8
    if abi >= 4:
        attr.handled_access_net = _LL_NET_BIND_TCP | _LL_NET_CONNECT_TCP
        size = 16
    if abi >= 6:
        attr.scoped = _LL_SCOPE_ABSTRACT_UNIX_SOCKET | _LL_SCOPE_SIGNAL
        size = 24
    read_dir = _LL_FS["READ_FILE"] | _LL_FS["READ_DIR"]
    ruleset = _syscall("landlock_create_ruleset", ctypes.byref(attr), ctypes.c_size_t(size),
                       ctypes.c_uint32(0))
    try:
        allowed, skipped = [], {}
        for path in dict.fromkeys(paths):
            try:
                fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
            except OSError as exc:
                skipped[path] = _reason(exc)
                continue
            try:
                is_dir = stat.S_ISDIR(os.fstat(fd).st_mode)
                rule = _PathBeneathAttr(read_dir if is_dir else _LL_FS["READ_FILE"], fd)
                _syscall("landlock_add_rule", ruleset, _LL_RULE_PATH_BENEATH, ctypes.byref(rule),
                         ctypes.c_uint32(0))
                allowed.append(path)
            except OSError as exc:
                skipped[path] = _reason(exc)
            finally:
                os.close(fd)
        mode = _other_threads_mode(abi)
        if mode.startswith("kernel"):
            _syscall("landlock_restrict_self", ruleset, ctypes.c_uint32(_LL_RESTRICT_SELF_TSYNC))
            threads: Any = "all (kernel TSYNC)"
        else:
            threads = "calling thread and the threads it starts (no TSYNC before ABI 8)"
            if mode == "signal broadcast":
                try:
                    done = _Broadcast(ruleset).run()
                    ok = done["confirmed"] == done["signalled"] and not done["failed"]
                    threads = ("all" if ok else "partial") + (
                        f" ({done['confirmed']} of {done['signalled']} other threads restricted "
                        f"themselves by signal, {done['failed']} failed)")
                except Exception as exc:  # noqa: BLE001
                    threads += f"; signal broadcast failed: {_reason(exc)}"
            _syscall("landlock_restrict_self", ruleset, ctypes.c_uint32(0))
        out["landlock"] = abi
        out["landlock_threads"] = threads
        out["landlock_read_only"] = allowed
        if skipped:
            out["landlock_skipped"] = skipped
        out["landlock_net"] = "no TCP bind/connect" if abi >= 4 else "not in ABI < 4"
    finally:
        os.close(ruleset)
    return out


# -- seccomp --------------------------------------------------------------------------------

_BPF_LD_W_ABS = 0x20
_BPF_JEQ_K = 0x15
_BPF_JGE_K = 0x35
_BPF_JSET_K = 0x45
_BPF_RET_K = 0x06


class _SockFilter(ctypes.Structure):
    _fields_ = [("code", ctypes.c_uint16), ("jt", ctypes.c_uint8), ("jf", ctypes.c_uint8),
                ("k", ctypes.c_uint32)]


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.POINTER(_SockFilter))]


class _Asm:
    """A tiny BPF assembler: jumps to labels, resolved forward (classic BPF jumps forward)."""

    def __init__(self) -> None:
        self.ins: list[tuple[int, Any, Any, int]] = []
        self.labels: dict[str, int] = {}

    def emit(self, code: int, k: int = 0, jt: Any = 0, jf: Any = 0) -> None:
        self.ins.append((code, jt, jf, k & 0xFFFFFFFF))

    def label(self, name: str) -> None:
        self.labels[name] = len(self.ins)

    def assemble(self) -> list[tuple[int, int, int, int]]:
        out = []
        for i, (code, jt, jf, k) in enumerate(self.ins):
            def off(target: Any, i: int = i) -> int:
                if isinstance(target, int):
                    return target
                rel = self.labels[target] - i - 1
                if not 0 <= rel <= 255:
                    raise ValueError(f"BPF jump to {target} out of range ({rel})")
                return rel
            out.append((code, off(jt), off(jf), k))
        return out


def _arg_lo(i: int) -> int:  # offsetof(struct seccomp_data, args[i]), low word (little endian)
    return 16 + 8 * i


def _arg_hi(i: int) -> int:
    return 16 + 8 * i + 4


def build_filter(arch: str, pid: int) -> list[tuple[int, int, int, int]]:
    """The seccomp program (code, jt, jf, k) for ``arch``; ``pid`` is the only signal target."""
    nr = _NR[arch]
    deny = _SECCOMP_RET_ERRNO | errno.EPERM
    a = _Asm()
    a.emit(_BPF_LD_W_ABS, 4)  # arch
    a.emit(_BPF_JEQ_K, _AUDIT_ARCH[arch], 1, 0)
    a.emit(_BPF_RET_K, deny)  # a foreign ABI (i386 int 0x80): refuse everything
    a.emit(_BPF_LD_W_ABS, 0)  # syscall number
    if arch == "x86_64":
        a.emit(_BPF_JGE_K, _X32_SYSCALL_BIT, 0, 1)
        a.emit(_BPF_RET_K, deny)
    for name in ENOSYS_SYSCALLS:
        a.emit(_BPF_JEQ_K, nr[name], 0, 1)
        a.emit(_BPF_RET_K, _SECCOMP_RET_ERRNO | errno.ENOSYS)
    for name in DENIED_SYSCALLS:
        if name in nr:
            a.emit(_BPF_JEQ_K, nr[name], 0, 1)
            a.emit(_BPF_RET_K, deny)
    # clone: a thread (CLONE_THREAD) without new namespaces only
    a.emit(_BPF_JEQ_K, nr["clone"], 0, 3)
    a.emit(_BPF_LD_W_ABS, _arg_lo(0))
    a.emit(_BPF_JSET_K, _CLONE_NS_FLAGS, "deny", 0)
    a.emit(_BPF_JSET_K, _CLONE_THREAD, "allow", "deny")
    # open/openat: read-only opens only
    for name, arg in (("open", 1), ("openat", 2)):
        if name in nr:
            a.emit(_BPF_JEQ_K, nr[name], 0, 2)
            a.emit(_BPF_LD_W_ABS, _arg_lo(arg))
            a.emit(_BPF_JSET_K, _O_WRITE_FLAGS, "deny", "allow")
    # signals: to this process only (pid_t is 32 bits: the low word is the whole value)
    for name in ("kill", "tgkill", "rt_sigqueueinfo", "rt_tgsigqueueinfo"):
        a.emit(_BPF_JEQ_K, nr[name], 0, 2)
        a.emit(_BPF_LD_W_ABS, _arg_lo(0))
        a.emit(_BPF_JEQ_K, pid, "allow", "deny")
    # prlimit64: reading only (new_limit == NULL)
    a.emit(_BPF_JEQ_K, nr["prlimit64"], 0, 4)
    a.emit(_BPF_LD_W_ABS, _arg_lo(2))
    a.emit(_BPF_JEQ_K, 0, 0, "deny")
    a.emit(_BPF_LD_W_ABS, _arg_hi(2))
    a.emit(_BPF_JEQ_K, 0, "allow", "deny")
    a.label("allow")
    a.emit(_BPF_RET_K, _SECCOMP_RET_ALLOW)
    a.label("deny")
    a.emit(_BPF_RET_K, deny)
    return a.assemble()


def _seccomp_status() -> bool | str:
    if not sys.platform.startswith("linux"):
        return f"not Linux ({sys.platform})"
    if _ARCH is None:
        return f"unsupported architecture {_MACHINE} (filters exist for x86_64 and aarch64)"
    try:
        _prctl(_PR_GET_SECCOMP)
    except OSError as exc:
        return f"not in this kernel ({_reason(exc)})"
    action = ctypes.c_uint32(_SECCOMP_RET_ERRNO)
    try:
        _syscall("seccomp", ctypes.c_uint(_SECCOMP_GET_ACTION_AVAIL), ctypes.c_uint(0),
                 ctypes.byref(action))
    except OSError as exc:
        if exc.errno == errno.ENOSYS:
            return "no seccomp() syscall (Linux < 3.17)"
        return f"SECCOMP_RET_ERRNO unavailable ({_reason(exc)})"
    return True


def _apply_seccomp() -> dict[str, Any]:
    status = _seccomp_status()
    if status is not True:
        return {"seccomp": status}
    assert _ARCH is not None
    prog = build_filter(_ARCH, os.getpid())
    arr = (_SockFilter * len(prog))(*[_SockFilter(c, jt, jf, k) for c, jt, jf, k in prog])
    fprog = _SockFprog(len(prog), arr)
    rv = _syscall("seccomp", ctypes.c_uint(_SECCOMP_SET_MODE_FILTER),
                  ctypes.c_uint(_SECCOMP_FILTER_FLAG_TSYNC), ctypes.byref(fprog))
    if rv != 0:  # TSYNC: the id of a thread that could not be synchronised
        return {"seccomp": f"not applied: thread {rv} could not be synchronised (TSYNC)"}
    return {"seccomp": True, "seccomp_arch": _ARCH, "seccomp_threads": "all (TSYNC)",
            "seccomp_instructions": len(prog)}


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
