"""The command line as a user types it: help everywhere, data as JSON, errors without tracebacks."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import numpy as np
import pytest

from node.cli import build_parser
from tests.conftest import JOB_TIMEOUT

pytestmark = pytest.mark.real  # every test here starts real processes


def _commands() -> list[str]:
    """Every subcommand the parser has: a new command is covered without editing this test."""
    import argparse

    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return sorted(sub.choices)


COMMANDS = _commands()


def parley(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "node.cli", *args], capture_output=True,
                          text=True, timeout=timeout)


def test_every_command_has_help():
    assert {"node", "gui", "status", "pair", "publish", "submit", "bench"} <= set(COMMANDS)
    out = parley("--help")
    assert out.returncode == 0
    for command in COMMANDS:  # a line of its own in the list of commands, with its help
        assert re.search(rf"^\s+{re.escape(command)}\s+\S", out.stdout, re.M), command
    parser = build_parser()
    for command in COMMANDS:
        with pytest.raises(SystemExit) as exit_:
            parser.parse_args([command, "--help"])
        assert exit_.value.code == 0


def test_no_node_running_is_a_clear_error(tmp_path):
    out = parley("assets", "--data-dir", str(tmp_path / "nobody"))
    assert out.returncode == 1
    assert "no node is running" in out.stderr and "parley node" in out.stderr
    assert "Traceback" not in out.stderr


def test_owner_workflow_through_the_cli(make_node, tmp_path):
    """publish (good and bad), assets --json, submit, show, approve, result: as an owner would."""
    alice, bob = make_node("alice", auto_approve=False), make_node("bob", auto_approve=False)
    a, b = str(alice.data_dir), str(bob.data_dir)
    bad = tmp_path / "bad.csv"
    bad.write_text("age,income\n31,1000\nn/a,2000\n")
    out = parley("publish", str(bad), "--tag", "wages", "--data-dir", a)
    assert out.returncode == 1 and "Traceback" not in out.stderr
    assert "line 3" in out.stderr and "'age'" in out.stderr and "n/a" in out.stderr

    good = tmp_path / "wages.csv"
    good.write_text("age,income,senior\n61.25,1000,0\n45.5,2000,1\n52.75,3100,1\n")
    out = parley("publish", str(good), "--tag", "wages", "--label", "senior", "--data-dir", a)
    assert out.returncode == 0, out.stderr
    listed = json.loads(parley("assets", "--json", "--data-dir", a).stdout)
    assert [x["schema"]["shape"] for x in listed] == [[3, 2]]
    assert listed[0]["schema"]["label"]["name"] == "senior"
    assert "61.25" not in json.dumps(listed)  # metadata only, never the data

    job_file = tmp_path / "total.py"
    job_file.write_text("def run(crypten):\n"
                        "    x = crypten.load('wages', 0)\n"
                        "    return x.sum(0).get_plain_text(dst=0)\n")
    out = parley("submit", str(job_file), "--party", "alice",
                 "--party", "bob", "--data", "wages@0", "--json",
                 "--data-dir", a)
    assert out.returncode == 0, out.stderr
    job_id = json.loads(out.stdout)["id"]

    for data_dir in (a, b):
        for _ in range(100):
            shown = parley("show", job_id, "--data-dir", data_dir)
            if shown.returncode == 0:
                break
        assert "   2      x = crypten.load('wages', 0)" in shown.stdout
        assert "results released to the orchestrator by ranks: 0" in shown.stdout
        printed = shown.stdout.split("proposal hash: ")[1].split()[0]
        refused = parley("approve", job_id, "--data-dir", data_dir)  # no hash, no terminal
        assert refused.returncode == 1 and f"--hash {printed[:12]}" in refused.stderr
        wrong = parley("approve", job_id, "--hash", "0123456789ab", "--data-dir", data_dir)
        assert wrong.returncode == 1 and "hash differs" in wrong.stderr
        out = parley("approve", job_id, "--hash", printed[:12], "--data-dir", data_dir)
        assert out.returncode == 0, out.stderr

    out = parley("result", job_id, "--wait", "--timeout", str(JOB_TIMEOUT), "--json",
                 "--data-dir", a)
    assert out.returncode == 0, out.stdout + out.stderr
    value = json.loads(out.stdout)["result"]["0"]["$tensor"]
    np.testing.assert_allclose(value["data"], [159.5, 6100], atol=1e-2)

    out = parley("reject", job_id, "--reason", "too late", "--data-dir", b)
    assert out.returncode == 1 and "succeeded; it cannot become rejected" in out.stderr


def test_a_second_asset_under_a_tag_is_warned_about_and_can_be_unpublished(make_node, tmp_path):
    alice = make_node("alice")
    a = str(alice.data_dir)
    csv = tmp_path / "w.csv"
    csv.write_text("a,b\n1,2\n3,4\n")
    first = json.loads(parley("publish", str(csv), "--tag", "dup", "--json", "--data-dir",
                              a).stdout)
    assert first["warnings"] == []
    out = parley("publish", str(csv), "--tag", "dup", "--data-dir", a)
    assert out.returncode == 0
    assert f"WARNING: the tag 'dup' is also on {first['id']}" in out.stdout
    assert f"parley unpublish {first['id']}" in out.stdout
    out = parley("unpublish", first["id"], "--data-dir", a)
    assert out.returncode == 0 and f"unpublished {first['id']}" in out.stdout
    assert [x["id"] for x in alice.client.assets()] != [first["id"]]
    assert len(alice.client.assets(["dup"])) == 1
    out = parley("unpublish", first["id"], "--data-dir", a)
    assert out.returncode == 1 and "Traceback" not in out.stderr


def test_a_file_of_labels_only_publishes_with_label(make_node, tmp_path):
    """`publish labels.csv --label diagnosis`, as the README writes it, for a file whose one
    column is the label: a job reads it as labels and as its one feature column."""
    alice = make_node("alice")
    a = str(alice.data_dir)
    labels = tmp_path / "labels.csv"
    labels.write_text("diagnosis\n1\n0\n1\n1\n")
    out = parley("publish", str(labels), "--tag", "dx", "--label", "diagnosis", "--json",
                 "--data-dir", a)
    assert out.returncode == 0, out.stderr
    schema = json.loads(out.stdout)["schema"]
    assert schema["shape"] == [4, 1] and schema["label"]["name"] == "diagnosis"
    job = tmp_path / "count.py"
    job.write_text("def run(crypten):\n"
                   "    y = crypten.load('dx', 0, part='labels')\n"
                   "    x = crypten.load('dx', 0)\n"
                   "    return (y.sum() + 10 * x.sum()).get_plain_text(dst=0)\n")
    out = parley("dry-run", str(job), "--json", "--data-dir", a)
    answer = json.loads(out.stdout)
    assert answer["state"] == "succeeded", answer["reason"]
    from node.wire import decode

    assert float(decode(answer["result"])) == pytest.approx(33.0, abs=1e-3)
