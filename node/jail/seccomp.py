"""Layer 4 of the jail, part 3: seccomp (no new sockets, processes or exec; no writes to
files) and the sealing of gloo's listening sockets that accept() can no longer serve."""

from __future__ import annotations

import ctypes
import errno
import os
import socket
import struct
import sys
from typing import Any

from node.jail.syscalls import (
    _ARCH,
    _AUDIT_ARCH,
    _CLONE_NS_FLAGS,
    _CLONE_THREAD,
    _MACHINE,
    _NR,
    _O_WRITE_FLAGS,
    _PR_GET_SECCOMP,
    _SECCOMP_FILTER_FLAG_TSYNC,
    _SECCOMP_GET_ACTION_AVAIL,
    _SECCOMP_RET_ALLOW,
    _SECCOMP_RET_ERRNO,
    _SECCOMP_SET_MODE_FILTER,
    _X32_SYSCALL_BIT,
    DENIED_SYSCALLS,
    ENOSYS_SYSCALLS,
    _prctl,
    _reason,
    _syscall,
)

__all__ = ["build_filter"]

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


