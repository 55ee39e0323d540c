"""OS lockdown of a party process (node/jail/lockdown.py).

Lockdown is irreversible, so every test runs it in a fresh interpreter. Each attack is shown to
have had no effect (no marker file, canary text never printed, no connection accepted, victim
process alive), not only to have raised. The key test runs a real 2-party CrypTen computation
over TCP whose parties lock down between a warm-up and the real work.
"""

from __future__ import annotations

import json
import os
import re
import select
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
PY = sys.executable

if not sys.platform.startswith("linux"):
    pytest.skip("lockdown is Linux-only", allow_module_level=True)

PRELUDE = textwrap.dedent(f"""
    import errno, json, os, sys
    sys.path.insert(0, {str(REPO)!r})
    from node.jail import lockdown

    def lock(**kw):
        args = dict(cpu_s=30, address_space_bytes=1 << 30, file_size_bytes=1 << 20)
        args.update(kw)
        report = lockdown.lock_down(lockdown.Limits(**args))
        print("REPORT " + json.dumps(report), file=sys.stderr, flush=True)
        return report

    results = {{}}

    def attempt(name, fn):
        try:
            value = fn()
            results[name] = "ok " + repr(value)[:200]
        except BaseException as exc:
            results[name] = "denied " + type(exc).__name__ + " " + str(getattr(exc, "errno", ""))

    def done():
        print("RESULTS " + json.dumps(results), flush=True)
""")


def run_child(code: str, timeout: float = 30, **kw: Any) -> subprocess.CompletedProcess[str]:
    """Run PRELUDE + code in a fresh interpreter; subprocess.run kills it on timeout."""
    return subprocess.run([PY, "-c", PRELUDE + textwrap.dedent(code)], capture_output=True,
                          text=True, timeout=timeout, cwd=str(REPO), **kw)


def results_of(proc: subprocess.CompletedProcess[str]) -> dict[str, str]:
    for line in proc.stdout.splitlines():
        if line.startswith("RESULTS "):
            return json.loads(line[len("RESULTS "):])
    raise AssertionError(f"no results (rc={proc.returncode})\nstdout:\n{proc.stdout}\n"
                         f"stderr:\n{proc.stderr[-3000:]}")


def report_of(text: str) -> dict[str, Any]:
    for line in text.splitlines():
        if line.startswith("REPORT "):
            return json.loads(line[len("REPORT "):])
    raise AssertionError(f"no lockdown report in:\n{text[-3000:]}")


def denied(value: str) -> bool:
    return value.startswith("denied ")


@pytest.fixture(scope="module")
def offered() -> dict[str, Any]:
    proc = run_child("print(json.dumps(lockdown.available()))")
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def need(offered: dict[str, Any], *mechanisms: str) -> None:
    for m in mechanisms:
        if m == "landlock" and not isinstance(offered["landlock"], int):
            pytest.skip(f"Landlock unavailable here: {offered['landlock']}")
        if m == "seccomp" and offered["seccomp"] is not True:
            pytest.skip(f"seccomp unavailable here: {offered['seccomp']}")


def test_available_reports_this_machine(offered: dict[str, Any]) -> None:
    print("\nthis machine offers:", json.dumps(offered, indent=1))
    for key in ("rlimits", "no_new_privs", "seccomp", "landlock", "landlock_other_threads"):
        assert key in offered
    assert isinstance(offered["landlock"], (int, str))
    assert offered["seccomp"] is True or isinstance(offered["seccomp"], str)
    assert offered["threads_now"] >= 1  # nothing was applied: the probe process lives on


@pytest.mark.real
def test_report_says_what_is_active(offered: dict[str, Any]) -> None:
    proc = run_child("""
        import ctypes, threading
        libc = ctypes.CDLL(None, use_errno=True)
        state = lambda: (libc.prctl(39, 0, 0, 0, 0), libc.prctl(21, 0, 0, 0, 0))  # NNP, seccomp
        go = threading.Event()
        early = threading.Thread(target=lambda: (go.wait(10), results.update(early=state())))
        early.start()  # exists before lockdown, like gloo's threads
        lock()
        go.set()
        early.join(10)
        results["main"] = state()
        done()
    """)
    res = results_of(proc)
    if offered["seccomp"] is True:  # no_new_privs and mode 2 (filter) in every thread
        assert res["main"] == [1, 2] and res["early"] == [1, 2], res
    report = report_of(proc.stderr)
    assert report["no_new_privs"] is True
    assert report["complete"] is (isinstance(offered["landlock"], int)
                                  and offered["seccomp"] is True)
    assert report["rlimits"]["RLIMIT_CORE"] == [0, 0]
    if isinstance(offered["landlock"], int):
        assert report["landlock"] == offered["landlock"]
        assert str(report["landlock_threads"]).startswith("all"), report["landlock_threads"]
    if offered["seccomp"] is True:
        assert report["seccomp"] is True


@pytest.mark.real
def test_no_new_sockets_or_connections(offered: dict[str, Any]) -> None:
    need(offered, "seccomp")
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    listener.setblocking(False)
    port = listener.getsockname()[1]
    try:
        proc = run_child(f"""
            import socket
            early = socket.socket(socket.AF_INET, socket.SOCK_STREAM)  # made before lockdown
            lock()
            attempt("socket", lambda: socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            attempt("udp", lambda: socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
            attempt("unix", lambda: socket.socket(socket.AF_UNIX, socket.SOCK_STREAM))
            attempt("socketpair", socket.socketpair)
            attempt("create_connection",
                    lambda: socket.create_connection(("127.0.0.1", {port}), timeout=2))
            attempt("connect_existing", lambda: early.connect(("127.0.0.1", {port})))
            attempt("bind_existing", lambda: early.bind(("127.0.0.1", 0)))
            attempt("listen_existing", lambda: early.listen(1))
            done()
        """)
        res = results_of(proc)
        assert all(denied(v) for v in res.values()), res
        # the proof: the listener never saw a connection
        readable, _, _ = select.select([listener], [], [], 0.5)
        assert not readable
        with pytest.raises(BlockingIOError):
            listener.accept()
    finally:
        listener.close()


@pytest.mark.real
def test_no_new_processes_but_threads_work(offered: dict[str, Any]) -> None:
    need(offered, "seccomp")
    proc = run_child("""
        import subprocess, threading
        lock()

        def fork():
            pid = os.fork()
            if pid == 0:
                print("FORKED-CHILD", flush=True)
                os._exit(0)
            os.waitpid(pid, 0)
            return pid

        attempt("fork", fork)
        attempt("subprocess", lambda: subprocess.run(["/bin/echo", "SPAWNED"], timeout=5))
        attempt("posix_spawn",
                lambda: os.waitpid(os.posix_spawn("/bin/echo", ["echo", "SPAWNED"], {}), 0))
        ran = []
        t = threading.Thread(target=lambda: ran.append("thread ran"))
        t.start()
        t.join(5)
        results["thread"] = ran[0] if ran else "no"
        attempt("execv", lambda: os.execv("/bin/sh", ["sh", "-c", "echo EXECED; exit 42"]))
        done()
    """)
    res = results_of(proc)
    assert proc.returncode == 0  # an exec that worked would have exited 42
    for name in ("fork", "subprocess", "posix_spawn", "execv"):
        assert denied(res[name]), (name, res[name])
    assert res["thread"] == "thread ran"
    for marker in ("FORKED-CHILD", "SPAWNED", "EXECED"):
        assert marker not in proc.stdout


@pytest.mark.real
def test_no_file_writes(offered: dict[str, Any], tmp_path: Path) -> None:
    need(offered, "seccomp")
    tmp_marker = Path("/tmp") / f"parley-lockdown-marker-{os.getpid()}-{time.time_ns()}"
    victim = tmp_path / "victim.txt"
    victim.write_text("KEEP")
    victim.chmod(0o644)
    proc = run_child(f"""
        tmp, victim = {str(tmp_path)!r}, {str(victim)!r}
        lock()
        attempt("open_w", lambda: open(tmp + "/marker1", "w").write("x"))
        attempt("os_open_creat",
                lambda: os.open(tmp + "/marker2", os.O_CREAT | os.O_WRONLY, 0o644))
        attempt("tmp_root", lambda: open({str(tmp_marker)!r}, "w"))
        attempt("append", lambda: open(victim, "a").write("x"))
        attempt("rplus", lambda: open(victim, "r+").write("x"))
        attempt("unlink", lambda: os.unlink(victim))
        attempt("rename", lambda: os.rename(victim, tmp + "/moved"))
        attempt("mkdir", lambda: os.mkdir(tmp + "/newdir"))
        attempt("chmod", lambda: os.chmod(victim, 0o777))
        attempt("truncate", lambda: os.truncate(victim, 0))
        attempt("symlink", lambda: os.symlink(victim, tmp + "/link"))
        attempt("hardlink", lambda: os.link(victim, tmp + "/hard"))
        done()
    """)
    res = results_of(proc)
    assert all(denied(v) for v in res.values()), res
    assert sorted(p.name for p in tmp_path.iterdir()) == ["victim.txt"]
    assert victim.read_text() == "KEEP"
    assert victim.stat().st_mode & 0o777 == 0o644
    assert not tmp_marker.exists()


@pytest.mark.real
def test_no_reads_outside_read_only_paths(offered: dict[str, Any], tmp_path: Path) -> None:
    need(offered, "landlock")
    token = f"CANARY-{os.getpid()}-{time.time_ns()}"
    secret = tmp_path / "secret"
    secret.mkdir()
    (secret / "canary.txt").write_text(token)
    allowed = tmp_path / "allowed"
    allowed.mkdir()
    (allowed / "ok.txt").write_text("ALLOWED-CONTENT")
    canary = str(secret / "canary.txt")
    proc = run_child(f"""
        import threading
        canary = {canary!r}
        go, seen = threading.Event(), {{}}

        def early():  # a thread that exists before lockdown, like gloo's and torch's
            go.wait(10)
            attempt("early_thread", lambda: open(canary).read())

        t = threading.Thread(target=early)
        t.start()
        lock(read_only_paths=lockdown.default_read_only_paths() + [{str(allowed)!r}])
        go.set()
        t.join(10)
        attempt("main_thread", lambda: open(canary).read())
        late = threading.Thread(target=lambda: attempt("late_thread", lambda: open(canary).read()))
        late.start()
        late.join(10)
        attempt("listdir", lambda: os.listdir({str(secret)!r}))
        attempt("etc_passwd", lambda: open("/etc/passwd").read())
        attempt("allowed", lambda: open({str(allowed / "ok.txt")!r}).read())
        attempt("stdlib_import", lambda: __import__("fractions").Fraction(1, 3))
        done()
    """)
    res = results_of(proc)
    for name in ("early_thread", "main_thread", "late_thread", "listdir", "etc_passwd"):
        assert denied(res[name]), (name, res[name])
    assert "ALLOWED-CONTENT" in res["allowed"]
    assert res["stdlib_import"].startswith("ok")
    assert token not in proc.stdout and token not in proc.stderr


@pytest.mark.real
def test_no_signals_to_other_processes(offered: dict[str, Any]) -> None:
    need(offered, "seccomp")
    victim = subprocess.Popen(["sleep", "60"])
    try:
        proc = run_child(f"""
            import signal
            lock()
            attempt("kill_other", lambda: os.kill({victim.pid}, signal.SIGKILL))
            attempt("kill_all", lambda: os.kill(-1, 0))  # signal 0: a probe, harmless anyway
            attempt("kill_group", lambda: os.kill(0, 0))
            attempt("kill_self", lambda: os.kill(os.getpid(), 0))
            attempt("raise_ignored", lambda: (signal.signal(signal.SIGUSR1, signal.SIG_IGN),
                                              signal.raise_signal(signal.SIGUSR1)))
            done()
        """)
        res = results_of(proc)
        for name in ("kill_other", "kill_all", "kill_group"):
            assert denied(res[name]), (name, res[name])
        assert res["kill_self"].startswith("ok") and res["raise_ignored"].startswith("ok")
        assert victim.poll() is None  # still alive
    finally:
        victim.kill()
        victim.wait(5)


@pytest.mark.real
def test_limits_cannot_be_raised(offered: dict[str, Any]) -> None:
    need(offered, "seccomp")
    proc = run_child("""
        import resource
        report = lock(cpu_s=30)
        inf = resource.RLIM_INFINITY
        attempt("raise_cpu", lambda: resource.setrlimit(resource.RLIMIT_CPU, (inf, inf)))
        attempt("raise_as", lambda: resource.setrlimit(resource.RLIMIT_AS, (inf, inf)))
        attempt("prlimit", lambda: resource.prlimit(0, resource.RLIMIT_FSIZE, (inf, inf)))
        results["cpu_now"] = list(resource.getrlimit(resource.RLIMIT_CPU))
        results["cpu_locked"] = report["rlimits"]["RLIMIT_CPU"]
        done()
    """)
    res = results_of(proc)
    for name in ("raise_cpu", "raise_as", "prlimit"):
        assert denied(res[name]), (name, res[name])
    assert res["cpu_now"] == res["cpu_locked"]  # reading still works, and nothing moved


@pytest.mark.real
def test_cpu_limit_kills_a_busy_loop() -> None:
    t0 = time.monotonic()
    proc = run_child("""
        import time
        lock(cpu_s=1)
        print("LOCKED", flush=True)
        end = time.monotonic() + 30
        while time.monotonic() < end:
            pass
        print("SURVIVED", flush=True)
    """, timeout=40)
    elapsed = time.monotonic() - t0
    assert "LOCKED" in proc.stdout and "SURVIVED" not in proc.stdout
    assert proc.returncode in (-signal.SIGXCPU, -signal.SIGKILL), proc.returncode
    assert elapsed < 15, elapsed


@pytest.mark.real
def test_memory_hog_gets_memory_error() -> None:
    proc = run_child("""
        import numpy
        report = lock(address_space_bytes=256 << 20)
        results["as"] = report["rlimits"]["RLIMIT_AS"]
        attempt("small", lambda: len(bytearray(16 << 20)))
        def hog():
            big = bytearray(1 << 30)
            print("BIG-ALLOCATED", flush=True)
            return len(big)
        attempt("hog", hog)
        def numpy_hog():
            arr = numpy.ones(1 << 28)  # 2 GiB
            print("NUMPY-ALLOCATED", flush=True)
            return arr.size
        attempt("numpy_hog", numpy_hog)
        done()
    """)
    res = results_of(proc)
    assert res["small"] == f"ok {16 << 20}"
    assert res["hog"].startswith("denied MemoryError"), res["hog"]
    assert "MemoryError" in res["numpy_hog"], res["numpy_hog"]
    assert "ALLOCATED" not in proc.stdout
    assert isinstance(res["as"], list) and res["as"][0] > 256 << 20  # headroom on top of now


@pytest.mark.real
def test_file_size_limit(tmp_path: Path) -> None:
    log = tmp_path / "party.log"
    proc = run_child(f"""
        f = open({str(log)!r}, "wb", buffering=0)  # like the party's stderr log: opened before
        lock(file_size_bytes=4096)
        attempt("small", lambda: f.write(b"a" * 1000))
        try:
            for _ in range(100):
                f.write(b"b" * 1000)
            results["flood"] = "written"
        except OSError as exc:
            results["flood"] = errno.errorcode.get(exc.errno, str(exc.errno))
        done()
    """)
    res = results_of(proc)
    assert res["small"] == "ok 1000"
    assert res["flood"] == "EFBIG", res
    assert log.stat().st_size <= 4096


@pytest.mark.real
def test_threads_and_maths_still_work(offered: dict[str, Any]) -> None:
    proc = run_child("""
        import numpy, threading, torch
        from concurrent.futures import ThreadPoolExecutor
        torch.set_num_threads(2)  # the pool's threads are made lazily: after lockdown
        lock()
        a = numpy.arange(12.0).reshape(3, 4)
        results["numpy"] = float((a @ a.T).sum())
        torch.manual_seed(0)
        x = torch.randn(400, 400)
        y = x @ x.T
        results["torch"] = bool(torch.allclose(y, y.T, atol=1e-3))
        results["torch_threads"] = torch.get_num_threads()
        with ThreadPoolExecutor(4) as pool:
            results["pool"] = sum(pool.map(lambda i: i * i, range(10)))
        results["threads_now"] = threading.active_count()
        done()
    """)
    res = results_of(proc)
    a = [[float(4 * r + c) for c in range(4)] for r in range(3)]
    assert res["numpy"] == sum(sum(x * y for x, y in zip(r1, r2)) for r1 in a for r2 in a)
    assert res["torch"] is True and res["torch_threads"] == 2
    assert res["pool"] == 285
    assert "Error in cpuinfo" not in proc.stderr  # torch still sees the CPU (default paths)


def test_syscall_tables_and_filters() -> None:
    from node.jail import seccomp, syscalls

    for arch in ("x86_64", "aarch64"):
        prog = seccomp.build_filter(arch, 12345)  # every jump resolves within 255
        assert 100 < len(prog) < 4096
    headers = {"x86_64": Path("/usr/include/x86_64-linux-gnu/asm/unistd_64.h"),
               "aarch64": Path("/usr/include/asm-generic/unistd.h")}
    checked = 0
    for arch, header in headers.items():
        if not header.exists():
            continue
        known = {m[1]: int(m[2]) for m in re.finditer(
            r"#define __NR(?:3264)?_(\w+)\s+(\d+)", header.read_text())}
        for name, nr in syscalls._NR[arch].items():
            if name in known:
                assert known[name] == nr, (arch, name, nr, known[name])
                checked += 1
    if not checked:
        pytest.skip("no kernel headers to check the syscall tables against")


PARTY = """
import datetime, json, os, sys
rank, port = int(sys.argv[1]), sys.argv[2]
os.environ.update(DISTRIBUTED_BACKEND="gloo", RENDEZVOUS=f"tcp://127.0.0.1:{port}",
                  WORLD_SIZE="2", RANK=str(rank))
sys.path.insert(0, REPO)
import torch
from torch.distributed import distributed_c10d as c10d
c10d.default_pg_timeout = datetime.timedelta(seconds=20)
torch.set_num_threads(1)
from node.compat import crypten
from node.jail import lockdown

def say(**kw):
    print(json.dumps({"rank": rank, **kw}), flush=True)

crypten.init()
torch.manual_seed(0)
a, b = torch.randn(6, 5), torch.randn(5, 4)
warm = crypten.cryptensor(torch.ones(3), src=0)
assert torch.allclose((warm * warm + warm).get_plain_text(), torch.full((3,), 2.0), atol=1e-3)

report = lockdown.lock_down(lockdown.Limits(cpu_s=60, address_space_bytes=2 << 30,
                                            file_size_bytes=1 << 20))
import socket
try:
    socket.socket()
    sock = "created"
except OSError as exc:
    sock = f"denied {exc.errno}"
say(event="locked", report=report, socket=sock)
sys.stdin.readline()  # the test probes our listeners meanwhile

x = crypten.cryptensor(a, src=0)
y = crypten.cryptensor(b, src=1)
z = x.matmul(y).relu().get_plain_text()
w = (x.matmul(y) * 0.5 - 1).get_plain_text()
say(event="result", err=float((z - (a @ b).relu()).abs().max()),
    err2=float((w - ((a @ b) * 0.5 - 1)).abs().max()))
os._exit(0)
"""


def _readline(proc: subprocess.Popen[str], deadline: float) -> dict[str, Any]:
    assert proc.stdout is not None
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("a party said nothing in time")
        ready, _, _ = select.select([proc.stdout], [], [], left)
        if ready:
            line = proc.stdout.readline()
            if not line:
                raise EOFError(f"party exited with {proc.wait(5)}")
            if line.startswith("{"):
                return json.loads(line)


@pytest.mark.real
def test_two_party_crypten_after_lockdown(tmp_path: Path, offered: dict[str, Any]) -> None:
    script = tmp_path / "party.py"
    script.write_text(f"REPO = {str(REPO)!r}\n" + PARTY)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    logs = [open(tmp_path / f"party{r}.log", "w+") for r in range(2)]
    parties = [subprocess.Popen([PY, str(script), str(r), str(port)], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=logs[r], text=True, cwd=tmp_path)
               for r in range(2)]
    probes: list[socket.socket] = []
    try:
        deadline = time.monotonic() + 60
        locked = [_readline(p, deadline) for p in parties]
        for ev in locked:
            assert ev["event"] == "locked", ev
            report = ev["report"]
            print(f"\nrank {ev['rank']} lockdown:", json.dumps(report))
            if offered["seccomp"] is True:
                assert report["seccomp"] is True and ev["socket"].startswith("denied")
            if isinstance(offered["landlock"], int):
                assert str(report["landlock_threads"]).startswith("all"), report
            assert report["listeners_sealed"], report  # TCPStore and gloo listen on ports
        # Nobody can connect to a locked party's listening ports (the SYN is dropped): a
        # connection there would make gloo call accept(), which seccomp refuses.
        ports = [int(label.rsplit(":", 1)[1]) for ev in locked
                 for label in ev["report"]["listeners_sealed"]]
        for p in ports:
            probe = socket.socket()
            probe.setblocking(False)
            probe.connect_ex(("127.0.0.1", p))
            probes.append(probe)
        _, connected, _ = select.select([], probes, [], 0.5)
        assert not connected, "a locked party's listener answered"
        for p in parties:
            assert p.stdin is not None
            p.stdin.write("go\n")
            p.stdin.flush()
        results = [_readline(p, deadline) for p in parties]
        for ev in results:
            assert ev["event"] == "result", ev
            assert ev["err"] < 1e-2 and ev["err2"] < 1e-2, ev
        for p in parties:
            assert p.wait(10) == 0
    except BaseException:
        for r, log in enumerate(logs):
            log.seek(0)
            print(f"--- party {r} log ---\n{log.read()[-4000:]}")
        raise
    finally:
        for probe in probes:
            probe.close()
        for p in parties:
            if p.poll() is None:
                p.kill()
            p.wait(10)
        for log in logs:
            log.close()
