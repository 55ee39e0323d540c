"""A full disk under the data dir: every command says so, and where; nothing is lost."""

from __future__ import annotations

import errno
import os
import subprocess
import sys

import pytest


def parley(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "node.cli", *args], capture_output=True,
                          text=True, timeout=120)


@pytest.fixture
def small_disk(tmp_path):
    where = tmp_path / "small"
    where.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=24m", "tmpfs", str(where)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here (needs root): {mounted.stderr.strip()}")
    yield where
    subprocess.run(["umount", "-l", str(where)], check=False)


def _fill(where) -> None:
    fd = os.open(where / "filler", os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        for size in (1 << 20, 4096, 512):  # big blocks, then the last few small ones
            try:
                while True:
                    os.write(fd, b"\0" * size)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC
    finally:
        os.close(fd)


def test_a_full_disk_is_named_and_nothing_is_lost(make_node, small_disk, tmp_path):
    alice = make_node("alice", data_dir=small_disk / "alice", auto_approve=False)
    bob = make_node("bob", pair=False)
    a = str(alice.data_dir)
    for i in range(3):  # make the databases grow past what their files already hold
        assert parley("add-peer", f"127.0.0.{i + 2}:9", "--data-dir", a).returncode == 0
    _fill(small_disk)
    attempts = {
        "add-peer": parley("add-peer", "127.0.0.9:9", "--data-dir", a),
        "pair": parley("pair", bob.address, "--data-dir", a),
        "policy": parley("policy", "add", "alice", "train", "--data-dir", a),
    }
    for command, out in attempts.items():
        assert out.returncode == 1, (command, out.stdout, out.stderr)
        assert "disk holding this node's data" in out.stderr and a in out.stderr, (command,
                                                                                  out.stderr)
        assert "free some space" in out.stderr and "Traceback" not in out.stderr
        assert "unexpected error" not in out.stderr
    assert alice.client.status()["name"] == "alice"  # the node lives on

    os.unlink(small_disk / "filler")
    assert parley("policy", "add", "alice", "train", "--data-dir", a).returncode == 0
    assert parley("add-peer", "127.0.0.9:9", "--data-dir", a).returncode == 0
    assert [p["kind"] for p in alice.client.policies()] == ["train"]
