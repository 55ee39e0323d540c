"""The README's "two nodes on one machine" commands, run as written and in order.

Only what a reader would fill in is filled in: the pairing id, the job id and the hash that
earlier commands printed. ``~`` is a fresh home, ``parley`` is this checkout's CLI. mDNS runs
on the loopback only (the nodes listen on 127.0.0.1 and announce nothing else).
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import parties_writing_under

pytestmark = pytest.mark.real  # every test here starts real processes

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def _block(marker: str) -> list[str]:
    part = README.split(f"<!-- {marker} -->", 1)[1].split(f"<!-- /{marker} -->", 1)[0]
    body = part.split("```sh", 1)[1].split("```", 1)[0]
    return [line for line in body.strip().splitlines() if line.strip()]


def _job_file() -> str:
    before = README.split("<!-- one-machine -->", 1)[0]
    return before.rsplit("```python", 1)[1].split("```", 1)[0].lstrip("\n")


def _found(pattern: str, out: subprocess.CompletedProcess[str], outputs: list[str],
           line: str) -> str:
    """What ``pattern`` matches in a command's output; else the test fails showing it all."""
    match = re.search(pattern, out.stdout)
    assert match, "\n".join([*outputs, f"$ {line}  (exit {out.returncode})\n{out.stdout}"
                                        f"{out.stderr}"])
    return match.group()


def test_the_readme_on_one_machine(tmp_path):
    home = tmp_path / "home"
    work = tmp_path / "work"
    home.mkdir()
    (work / "resources").mkdir(parents=True)
    shutil.copy(ROOT / "resources" / "bob_features.csv", work / "resources")
    (work / "job.py").write_text(_job_file())
    env = {**os.environ, "HOME": str(home), "PYTHONPATH": str(ROOT)}
    parley = f"{sys.executable} -m node.cli"
    # the nodes' names are this run's own: mDNS reaches every node on the machine, and with
    # another run's bob in sight `parley pair bob` rightly asks which one (by node id)
    run_id = secrets.token_hex(3)
    filled: dict[str, str] = {"alice": f"alice-{run_id}", "bob": f"bob-{run_id}"}
    daemons: list[subprocess.Popen[bytes]] = []
    outputs: list[str] = []

    def fill(line: str) -> str:
        command = line.split("  #", 1)[0].strip()
        for key, value in filled.items():
            command = re.sub(rf"(?<![-\w]){key}\b", value, command)  # bob, not bc-bob
        return command

    def run(line: str) -> subprocess.CompletedProcess[str]:
        command = re.sub(r"^parley\b", parley, fill(line))
        if command.endswith("&"):
            log = open(tmp_path / f"daemon{len(daemons)}.log", "wb")
            daemons.append(subprocess.Popen(["sh", "-c", command[:-1]], cwd=work, env=env,
                                            stdout=log, stderr=subprocess.STDOUT,
                                            start_new_session=True))
            return subprocess.CompletedProcess(command, 0, "", "")
        return subprocess.run(["sh", "-c", command], cwd=work, env=env, capture_output=True,
                              text=True, timeout=180)

    def until(line: str, ok, timeout: float = 30) -> subprocess.CompletedProcess[str]:
        """A command a reader would repeat until it shows what the README says it shows."""
        deadline = time.monotonic() + timeout
        while True:
            out = run(line)
            if ok(out) or time.monotonic() > deadline:
                return out
            time.sleep(0.5)

    try:
        for line in _block("one-machine"):
            if line.startswith("parley node"):
                run(line)
                data = home / fill(line).split("~/", 1)[1].split()[0]
                out = until("true", lambda _o, d=data: (d / "node.json").exists())
                continue
            if line.startswith("parley peers"):
                out = until(line, lambda o: "bob" in o.stdout and o.returncode == 0)
                assert "127.0.0.1" in out.stdout, out.stdout
            elif line.startswith("parley pair bob"):
                out = run(line)
                filled["PAIRING"] = _found(r"p-[0-9a-f]{16}", out, outputs, line)
            elif line.startswith("parley search"):
                out = until(line, lambda o: "bc-bob" in o.stdout)
            elif line.startswith("parley submit"):
                out = run(line)
                filled["JOB"] = _found(r"j-[0-9a-f]{16}", out, outputs, line)
            elif line.startswith("parley show"):
                out = until(line, lambda o: o.returncode == 0)
                filled["HASH"] = out.stdout.split("proposal hash: ", 1)[1].split()[0][:12]
            else:
                out = run(line)
            outputs.append(f"$ {line}\n{out.stdout}{out.stderr}")
            assert out.returncode == 0, "\n".join(outputs)
            assert "Traceback" not in out.stderr, out.stderr
        result = outputs[-1]
        assert "succeeded" in result, result
        expected = np.loadtxt(ROOT / "resources" / "bob_features.csv", delimiter=",",
                              skiprows=1).mean(0)
        printed = result.split("result released by rank 0:", 1)[1]
        shown = [float(x) for x in re.findall(r"-?\d+\.?\d*(?:e[-+]?\d+)?", printed)]
        np.testing.assert_allclose(shown[:len(expected)], expected, rtol=1e-3, atol=1e-3)
    finally:
        for proc in daemons:
            os.killpg(proc.pid, signal.SIGTERM)
        for proc in daemons:
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
    deadline = time.monotonic() + 15
    while parties_writing_under(tmp_path) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not parties_writing_under(tmp_path)
