"""Run a command under the hardening of parley-node.service, as systemd would apply it, where
no systemd manager runs (a container, CI): ``python3 unit_hardening.py UNIT -- COMMAND ...``.

Each hardening option the unit sets becomes the seccomp filter (libseccomp) or process setting
that systemd makes of it (src/shared/seccomp-util.c); an option this script does not know makes
it fail, so the unit cannot gain one that packaging/check.sh has not run a job under.
Stdlib only, x86_64 and aarch64 Linux.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import sys

KNOWN = {"UMask", "NoNewPrivileges", "LockPersonality", "RestrictRealtime", "RestrictSUIDSGID",
         "RestrictNamespaces", "SystemCallArchitectures", "RestrictAddressFamilies"}
# options of the [Service] section that are not hardening
PLAIN = {"Type", "ExecStart", "Restart", "RestartSec", "TimeoutStopSec", "Environment"}

ALLOW = 0x7FFF0000
EQ, MASKED_EQ, NE, GE = 4, 7, 1, 5
FAMILIES = {"AF_UNIX": 1, "AF_INET": 2, "AF_INET6": 10, "AF_NETLINK": 16}
NS_FLAGS = (0x00020000, 0x02000000, 0x04000000, 0x08000000, 0x10000000, 0x20000000,
            0x40000000, 0x00000080)  # CLONE_NEWNS, CGROUP, UTS, IPC, USER, PID, NET, TIME


class Cmp(ctypes.Structure):
    _fields_ = [("arg", ctypes.c_uint), ("op", ctypes.c_int), ("a", ctypes.c_uint64),
                ("b", ctypes.c_uint64)]


def read_unit(path: str) -> dict[str, str]:
    options, section = {}, ""
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line.startswith("["):
                section = line
            elif line and not line.startswith(("#", ";")) and section == "[Service]":
                key, _, value = line.partition("=")
                if key not in KNOWN | PLAIN:
                    raise SystemExit(f"unit_hardening.py: {key}= is not emulated; teach it here "
                                     "before the unit sets it")
                options[key] = value
    return options


def main(argv: list[str]) -> int:
    unit, sep, command = argv[0], argv[1], argv[2:]
    assert sep == "--" and command, __doc__
    opts = read_unit(unit)
    lib = ctypes.CDLL(ctypes.util.find_library("seccomp") or "libseccomp.so.2", use_errno=True)
    lib.seccomp_init.restype = ctypes.c_void_p
    lib.seccomp_init.argtypes = [ctypes.c_uint32]
    lib.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
    lib.seccomp_rule_add_array.argtypes = [ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int,
                                           ctypes.c_uint, ctypes.POINTER(Cmp)]
    lib.seccomp_load.argtypes = [ctypes.c_void_p]
    ctx = lib.seccomp_init(ALLOW)  # native architecture only: SystemCallArchitectures=native

    def deny(name: str, code: int, *cmps: tuple[int, int, int, int]) -> None:
        nr = lib.seccomp_syscall_resolve_name(name.encode())
        if nr < 0:
            return  # not on this architecture (open, chmod, mkdir on aarch64)
        array = (Cmp * max(1, len(cmps)))(*[Cmp(*c) for c in cmps])
        rc = lib.seccomp_rule_add_array(ctx, 0x00050000 | code, nr, len(cmps), array)
        if rc != 0:
            raise SystemExit(f"unit_hardening.py: rule for {name}: {os.strerror(-rc)}")

    if opts.get("RestrictNamespaces") == "yes":
        for flag in NS_FLAGS:
            deny("unshare", errno.EPERM, (0, MASKED_EQ, flag, flag))
            deny("clone", errno.EPERM, (0, MASKED_EQ, flag, flag))
        deny("setns", errno.EPERM)
        deny("clone3", errno.ENOSYS)  # its flags are out of a filter's reach; libc falls back
    if "RestrictAddressFamilies" in opts:
        allowed = {FAMILIES[f] for f in opts["RestrictAddressFamilies"].split()}
        for family in range(max(allowed)):
            if family not in allowed:
                deny("socket", errno.EAFNOSUPPORT, (0, EQ, family, 0))
        deny("socket", errno.EAFNOSUPPORT, (0, GE, max(allowed) + 1, 0))
    if opts.get("LockPersonality") == "yes":
        current = ctypes.CDLL(None).personality(0xFFFFFFFF)
        deny("personality", errno.EPERM, (0, NE, current, 0))
    if opts.get("RestrictRealtime") == "yes":
        for policy in (1, 2, 6):  # SCHED_FIFO, SCHED_RR, SCHED_DEADLINE
            deny("sched_setscheduler", errno.EPERM, (1, EQ, policy, 0))
    if opts.get("RestrictSUIDSGID") == "yes":
        for bit in (0o4000, 0o2000):
            for name, arg in (("chmod", 1), ("fchmod", 1), ("fchmodat", 2), ("mkdir", 1),
                              ("mkdirat", 2), ("mknod", 1), ("mknodat", 2), ("creat", 1)):
                deny(name, errno.EPERM, (arg, MASKED_EQ, bit, bit))
            deny("open", errno.EPERM, (1, MASKED_EQ, 0o100, 0o100), (2, MASKED_EQ, bit, bit))
            deny("openat", errno.EPERM, (2, MASKED_EQ, 0o100, 0o100), (3, MASKED_EQ, bit, bit))
    if opts.get("NoNewPrivileges") == "yes" or len(opts) > len(PLAIN & set(opts)):
        ctypes.CDLL(None).prctl(38, 1, 0, 0, 0)  # PR_SET_NO_NEW_PRIVS (seccomp needs it too)
    if lib.seccomp_load(ctx) != 0:
        raise SystemExit("unit_hardening.py: seccomp_load failed")
    if "UMask" in opts:
        os.umask(int(opts["UMask"], 8))
    os.execvp(command[0], command)
    return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
