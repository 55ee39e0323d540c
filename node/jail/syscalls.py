"""The jail's access to the kernel: libc, raw syscalls and their numbers, prctl.

Shared by the OS layer's parts (node/jail/rlimits.py, landlock.py, seccomp.py); the numbers
are checked against the kernel headers in tests/test_lockdown.py.
"""

from __future__ import annotations

import ctypes
import errno
import os
import platform
from typing import Any

__all__ = ["DENIED_SYSCALLS", "ENOSYS_SYSCALLS"]

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


