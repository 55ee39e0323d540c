"""A node's data dir is its owner's alone: revealed results (jobs.sqlite), the store and its
index, the audit log, the peer book, the identity key, party logs, node.json, settings.

Every folder in it is 0700 and every file 0600, for a node that has published and computed,
and for a data dir an older version (or a copy) left readable by others, once a node starts
on it.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import numpy as np

from node import db
from node.client import results
from node.localnet import LocalNode
from node.paths import make_private
from tests.conftest import JOB_TIMEOUT


def not_private(data_dir: Path) -> list[str]:
    """Entries of ``data_dir`` (itself included) that are not a 0700 folder or a 0600 file."""
    wrong = []
    for path in [data_dir, *data_dir.rglob("*")]:
        try:
            mode = path.lstat().st_mode
        except FileNotFoundError:  # a SQLite journal or a temp file, gone meanwhile
            continue
        if stat.S_ISLNK(mode):
            continue
        want = 0o700 if stat.S_ISDIR(mode) else 0o600
        if stat.S_IMODE(mode) != want:
            wrong.append(f"{path.relative_to(data_dir.parent)} {stat.S_IMODE(mode):04o}")
    return wrong


def publish_and_compute(alice: LocalNode, bob: LocalNode, tmp_path: Path) -> None:
    for node in (alice, bob):
        csv = tmp_path / f"{node.name}.csv"
        csv.write_text("a,b\n" + "1.0,2.0\n" * 3)
        node.client.publish(csv, tags=["nums"])
    source = ("def run(crypten):\n    return (crypten.load('nums', 0) + crypten.load('nums', 1))"
              ".sum().get_plain_text(dst=0)\n")
    job = alice.client.submit({
        "title": "privacy", "source": source, "entry": "run",
        "parties": [alice.party.spec(), bob.party.spec()],
        "bindings": [{"tag": "nums", "rank": r, "kind": "dataset"} for r in (0, 1)],
        "result_to": [0], "limits": {}})
    done = alice.client.wait(job["id"], timeout=JOB_TIMEOUT)
    assert done["state"] == "succeeded", done["reason"]
    assert results(done)[0] == np.float32(18.0)


def test_everything_a_node_keeps_is_private_to_its_owner(make_node, tmp_path):
    alice, bob = make_node("alice"), make_node("bob")
    publish_and_compute(alice, bob, tmp_path)
    kept = {p.name for p in alice.data_dir.iterdir()}
    # the test looks at what matters: results, store, audit, peers, keys, logs, node.json
    assert {"jobs.sqlite", "party-logs", "node.json", "peers.sqlite"} <= kept, kept
    assert any(name.endswith("-wal") for name in kept), kept
    for node in (alice, bob):
        assert not_private(node.data_dir) == [], f"{node.name}: readable by others"


def test_a_data_dir_left_readable_is_tightened_at_start(make_node, tmp_path):
    alice = make_node("alice", pair=False)
    alice.stop()
    stray = alice.data_dir / "party-logs" / "old.log"
    stray.parent.mkdir(exist_ok=True)
    stray.write_text("an old party's log\n")
    for path in [alice.data_dir, *alice.data_dir.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    assert len(not_private(alice.data_dir)) > 5

    alice.start()
    assert not_private(alice.data_dir) == []
    assert "could be read by other users" in (alice.data_dir / "node.log").read_text()


def test_making_private_leaves_what_a_link_points_to(tmp_path):
    outside = tmp_path / "outside.csv"
    outside.write_text("not the node's\n")
    outside.chmod(0o644)
    data = tmp_path / "data"
    (data / "sub").mkdir(parents=True)
    (data / "sub" / "kept.bin").write_bytes(b"x")
    (data / "sub" / "kept.bin").chmod(0o664)
    (data / "link.csv").symlink_to(outside)
    (data / "sub").chmod(0o755)  # whatever the umask of this test process is
    data.chmod(0o755)
    assert make_private(data) == 3  # data, data/sub, kept.bin (the link is not followed)
    assert stat.S_IMODE(outside.stat().st_mode) == 0o644
    assert not_private(data) == []
    assert make_private(data) == 0


def test_sqlite_files_are_private_whatever_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        conn = db.connect(tmp_path / "t.sqlite", "CREATE TABLE IF NOT EXISTS t (x);")
        conn.execute("INSERT INTO t VALUES (1)")
        made = sorted(p.name for p in tmp_path.iterdir())
        assert made == ["t.sqlite", "t.sqlite-shm", "t.sqlite-wal"]
        for name in made:
            assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o600, name
        conn.close()
    finally:
        os.umask(old)
