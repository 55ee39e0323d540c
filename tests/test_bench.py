"""``parley bench``: both arms compute the same thing the same way, and say so in their report.

The quick bench runs through the CLI as a user runs it (real nodes, real native CrypTen
processes); the native arm's failures are checked on their own (a party that fails, a party
that hangs); the statistics are checked on fixed numbers. Timings are the benchmark's business,
not the tests': nothing here asserts a speed.
"""

from __future__ import annotations

import json
import os
import socket
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import pytest

from node.bench import figures, native_arm
from node.bench.native_arm import NativeJob, run_native
from node.errors import NativeRunError
from tests.conftest import parties_writing_under

ROOT = Path(__file__).resolve().parents[1]


def _png_size(path: Path) -> tuple[int, int]:
    """Width and height of a PNG whose every chunk's CRC holds and whose pixels decompress to
    the size the header promises: a valid image, read without Qt."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG signature"
    pos, chunks, idat = 8, [], b""
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos:pos + 4])
        kind, body = data[pos + 4:pos + 8], data[pos + 8:pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length:pos + 12 + length])
        assert zlib.crc32(kind + body) == crc, f"bad CRC in chunk {kind!r}"
        chunks.append(kind)
        if kind == b"IDAT":
            idat += body
        pos += 12 + length
    assert chunks[0] == b"IHDR" and chunks[-1] == b"IEND", chunks
    width, height, depth, colour = struct.unpack(">IIBB", data[16:26])
    channels = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}[colour]
    assert len(zlib.decompress(idat)) == height * (1 + width * channels * depth // 8)
    return width, height


def _native_processes(root: Path) -> list[int]:
    """Native bench parties whose configuration lies under ``root``: this run's, not those of
    another test run on the machine."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if b"node/bench/native.py" in cmdline and str(root).encode() in cmdline:
                found.append(int(entry.name))
    return found


@pytest.mark.real
def test_the_quick_bench_finds_both_arms_computing_the_same(tmp_path):
    out = tmp_path / "out"
    done = subprocess.run([sys.executable, "-m", "node.cli", "bench", "--quick", "--tls-cost",
                           "--out", str(out)], cwd=ROOT, capture_output=True, text=True,
                          timeout=300, check=False, env={**os.environ, "TMPDIR": str(tmp_path)})
    assert "Traceback" not in done.stderr, done.stderr
    report = json.loads((out / "bench.json").read_text())
    rows = {r["name"]: r for r in report["workloads"]}
    assert report["quick"] and report["pairs"] == 1
    assert {r["parties"] for r in rows.values()} == {2, 3}  # a 3-party workload too

    # 1. the results: both arms reveal the same values, within fixed-point tolerance
    for name, row in rows.items():
        assert row["results"]["agree"], f"{name}: {row['results']}"
        assert row["results"]["max_abs_diff"] <= figures.ATOL, name
    assert "results: both arms agree" in done.stdout, done.stdout

    # 2. the fingerprint: every party sends the same rounds and bytes in both arms. This is
    # the part that fails while Parley's loading still broadcasts shapes or a model's
    # architecture that a plain CrypTen script knows out of band (the report names the
    # workload, the rank and the difference).
    for name, row in rows.items():
        assert row["fingerprint"]["equal"], f"{name}: {row['fingerprint'].get('difference')}"
        assert all(q["native"]["rounds"] > 0 for q in row["fingerprint"]["parties"]), name
    assert done.returncode == 0, done.stdout + done.stderr

    # 3. the report and the chart
    for row in rows.values():
        assert row["native"]["wall_s"] > 0 and row["parley"]["wall_s"] > 0
        assert row["ratios"]["wall_s"]["median"] > 0 and row["plaintext_s"] > 0
        assert row["parley"]["cpu"]["nodes_s"] >= 0 and row["native"]["cpu"]["parties_s"] > 0
    assert len(report["machine"]["load_before"]) == 3
    # the nodes' loop probes were read for every Parley run (how long is for `parley bench`)
    assert report["loop"]["longest_stall_ms"] >= 0 and "20 ms" in report["loop"]["probe"]
    # with what the node did in the longest stall (its loop's CPU is part of the node's)
    assert 0 <= report["loop"]["loop_cpu_ms"] <= report["loop"]["node_cpu_ms"] + 1, report["loop"]
    assert report["loop"]["runs"] >= 1 and report["loop"]["runs_over_50ms"] >= 0
    assert all("loop_stall_ms" in r["parley"] for r in report["workloads"][0]["runs"]), \
        report["workloads"][0].keys()
    assert "nodes' event loops: longest stall" in done.stdout
    assert "0.4.1" in report["arms"]["native"] and "node.compat" in report["arms"]["native"]
    # 4. what TLS on the party links costs, against nodes with plain links, for each workload
    # (a 2-party job among the arm's three nodes too): the same gloo bytes, a little more on
    # the wire (22 bytes of record header and tag per message, a handshake per link)
    tls = {r["name"]: r for r in report["tls"]}
    assert set(tls) == set(rows)
    for name, row in tls.items():
        plain, wire = row["bytes"]["plain"], row["bytes"]["tls"]
        assert 0 < plain < wire < plain * 1.3 + 32_000, (name, row["bytes"])
        assert row["with"]["wall_s"] > 0 and row["without"]["wall_s"] > 0, name
    assert "TLS on the party links" in done.stdout
    assert sorted(p.name for p in out.iterdir()) == ["bench.json", "bench.png"]
    width, height = _png_size(out / "bench.png")
    assert width >= 800 and height >= 300
    # every process of both arms ended with the run (its files are all under TMPDIR)
    assert not _native_processes(tmp_path) and not parties_writing_under(tmp_path)


@pytest.mark.real
def test_an_unknown_workload_is_refused_with_the_names_to_choose_from():
    done = subprocess.run([sys.executable, "-m", "node.cli", "bench", "--workloads", "mul,nope"],
                          cwd=ROOT, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 1
    assert "unknown workload(s) nope" in done.stderr and "matmul" in done.stderr
    assert "Traceback" not in done.stderr


def _job(tmp_path: Path, source: str) -> NativeJob:
    np.save(tmp_path / "x.npy", np.ones((3, 2), dtype=np.float32))
    return NativeJob(source, "run", 2, {"x": {"0": {"kind": "dataset", "parts": {
        "features": {"shape": [3, 2], "path": tmp_path / "x.npy"}}}}})


@pytest.mark.real
def test_a_native_party_that_fails_stops_the_others_and_is_named(tmp_path):
    source = ("def run(crypten):\n"
              "    x = crypten.load('x', 0)\n"
              "    if crypten.communicator.get().get_rank() == 1:\n"
              "        raise ValueError('no such column')\n"
              "    return (x * 2).get_plain_text()\n")
    t0 = time.monotonic()
    with pytest.raises(NativeRunError, match=r"rank 1 failed .*no such column"):
        run_native(_job(tmp_path, source), tmp_path / "run", timeout=120)
    assert time.monotonic() - t0 < 60  # rank 0, waiting for rank 1, was stopped at once
    assert not _native_processes(tmp_path)


@pytest.mark.real
def test_a_native_party_that_hangs_is_killed_at_the_deadline(tmp_path):
    source = ("def run(crypten):\n"
              "    x = crypten.load('x', 0)\n"
              "    while crypten.communicator.get().get_rank() == 1:\n"
              "        pass\n"
              "    return x.get_plain_text()\n")
    with pytest.raises(NativeRunError, match=r"did not finish within 10 s; killed"):
        run_native(_job(tmp_path, source), tmp_path / "run", timeout=10)
    assert not _native_processes(tmp_path)


@pytest.mark.real
def test_a_port_taken_before_rank_0_listens_is_retried_on_another(tmp_path, monkeypatch):
    taken = socket.create_server(("127.0.0.1", 0))  # someone else's server, already listening
    ports = iter([taken.getsockname()[1]])
    free = native_arm._free_port
    monkeypatch.setattr(native_arm, "_free_port", lambda: next(ports, None) or free())
    with taken:
        run = run_native(_job(tmp_path, "def run(crypten):\n    return crypten.load('x', 0)"
                                        ".sum().get_plain_text()\n"), tmp_path / "run", 120)
    assert run.attempts == 2
    assert figures.as_array(run.value(0)).item() == pytest.approx(6.0, abs=1e-3)


@pytest.mark.real
def test_a_native_run_reports_its_phases_rounds_and_result(tmp_path):
    run = run_native(_job(tmp_path, "def run(crypten):\n    x = crypten.load('x', 0)\n"
                                    "    return (x * x).sum().get_plain_text(dst=1)\n"),
                     tmp_path / "run", timeout=120)
    phases = run.phases()
    assert set(phases) == {"start_s", "rendezvous_s", "load_s", "compute_s", "reveal_s",
                           "return_s"}
    # each is the slowest party's, so they need not add up to the wall time: the party that
    # imports first waits longer at the rendezvous (under load, seconds longer)
    assert all(0 <= v <= run.wall_s for v in phases.values()), (phases, run.wall_s)
    assert phases["compute_s"] > 0 and phases["start_s"] > 0
    assert figures.as_array(run.value(1)).item() == pytest.approx(6.0, abs=1e-3)
    assert run.value(0) is None  # only rank 1 was given the value
    assert all(r["rounds"] > 0 and r["cpu_s"] > 0 for r in run.reports)


def test_ratios_have_a_reproducible_bootstrap_interval_and_an_aa_verdict():
    pairs = [(1.0, 1.2), (1.0, 1.1), (2.0, 2.6), (1.0, 1.25), (1.0, 1.15)]
    fig = figures.ratio_figure(pairs)
    assert fig["median"] == pytest.approx(1.2)
    assert fig["low"] <= fig["median"] <= fig["high"]
    assert fig == figures.ratio_figure(pairs)  # a fixed seed: the same interval every time
    assert figures.ratio_figure([(1.0, 3.0)])["low"] == 3.0  # one pair: no spread
    assert figures.aa_verdict({"median": 1.04})["ok"]
    noisy = figures.aa_verdict({"median": 1.3})
    assert not noisy["ok"] and "TOO NOISY" in noisy["verdict"]


def test_results_and_fingerprints_are_compared_with_what_differs_named():
    same = figures.compare_results(np.array([1.0, 2.0]), np.array([1.00002, 2.0]),
                                   np.array([1.0, 2.0]))
    assert same["agree"]
    off = figures.compare_results(np.array([1.0, 2.0]), np.array([1.0, 2.5]),
                                  np.array([1.0, 2.0]))
    assert not off["agree"] and "native 2, Parley 2.5" in off["why"]
    print_ = figures.compare_fingerprints([{"rounds": 22, "bytes": 100}],
                                          [{"rounds": 24, "bytes": 116}])
    assert not print_["equal"] and "+2 rounds, +16 bytes" in print_["difference"]
