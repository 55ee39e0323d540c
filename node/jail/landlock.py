"""Layer 4 of the jail, part 2: Landlock. The party keeps read access to what it needs to run
(``Limits.read_only_paths``) and nothing else: no writes, no new TCP, in every thread."""

from __future__ import annotations

import ctypes
import errno
import os
import stat
import struct
import sys
import threading
import time
from typing import Any

from node.jail.syscalls import (
    _ARCH,
    _MACHINE,
    _NR,
    _NR_COMMON,
    _PR_SET_NO_NEW_PRIVS,
    _lib,
    _reason,
    _syscall,
)

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


