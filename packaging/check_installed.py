"""Drive an installed `parley` through the check of packaging/check.sh: two nodes start and
pair (no mDNS), bob publishes, alice submits a 2-party job, both approve, and the result and
every party's confinement are written to a JSON file. Stdlib only: it runs on the host, and
`parley` may run in a chroot (--prefix), whose view of the files is --base, the host's --host-base.

    python3 packaging/check_installed.py --parley "chroot ... /usr/bin/parley" \
        --base /home/owner/check --host-base ROOT/home/owner/check \
        --data /opt/parley/_internal/resources/bob_features.csv --out result.json
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time

JOB = '''def run(crypten):
    x = crypten.load("bc-bob", 1)
    return {"sum": x.sum(dim=0).get_plain_text(dst=0),
            "mean": x.mean(dim=0).get_plain_text(dst=0)}
'''


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--parley", required=True, help="the command, shell-quoted")
    ap.add_argument("--base", required=True, help="a scratch dir, as `parley` sees it")
    ap.add_argument("--host-base", required=True, help="the same dir, as this script sees it")
    ap.add_argument("--data", required=True, help="bob_features.csv, as `parley` sees it")
    ap.add_argument("--out", required=True)
    ap.add_argument("--screenshot", action="store_true",
                    help="the app on alice's node, to BASE/screenshot.png (the bundle only)")
    a = ap.parse_args()
    parley = shlex.split(a.parley)
    os.makedirs(a.host_base, exist_ok=True)

    def run(*args: str, data_dir: str, as_json: bool = True) -> object:
        cmd = [*parley, *args, "--data-dir", f"{a.base}/{data_dir}"] + (
            ["--json"] if as_json else [])
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        if done.returncode != 0:
            raise SystemExit(f"FAILED: {' '.join(args)} ({done.returncode}):\n{done.stdout}"
                             f"{done.stderr}")
        return json.loads(done.stdout) if as_json else done.stdout

    t0 = time.monotonic()
    version = subprocess.run([*parley, "--version"], capture_output=True, text=True,
                             timeout=60, check=True).stdout.strip()
    version_s = time.monotonic() - t0
    nodes: dict[str, subprocess.Popen[bytes]] = {}
    info: dict[str, dict] = {}
    try:
        for name in ("alice", "bob"):
            host_dir = os.path.join(a.host_base, name)
            os.makedirs(host_dir, mode=0o700, exist_ok=True)
            if hasattr(os, "chown") and os.stat(a.host_base).st_uid != os.getuid():
                st = os.stat(a.host_base)
                os.chown(host_dir, st.st_uid, st.st_gid)
            log = open(os.path.join(a.host_base, f"{name}.log"), "wb")
            nodes[name] = subprocess.Popen(
                [*parley, "node", "--data-dir", f"{a.base}/{name}", "--name", name,
                 "--host", "127.0.0.1", "--port", "0", "--no-mdns", "--warm-workers", "1"],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        started = time.monotonic()
        for name in nodes:
            path = os.path.join(a.host_base, name, "node.json")
            while True:
                if nodes[name].poll() is not None:
                    raise SystemExit(f"FAILED: node {name} exited; see {a.host_base}/{name}.log")
                try:
                    with open(path) as f:
                        info[name] = json.load(f)
                    break
                except (OSError, ValueError):
                    if time.monotonic() - started > 120:
                        raise SystemExit(f"FAILED: node {name} did not start") from None
                    time.sleep(0.1)
        nodes_s = time.monotonic() - started
        bob_address = info["bob"]["peer_url"].removeprefix("https://")
        asked = run("pair", bob_address, data_dir="alice")
        theirs = next(q for q in run("pair", data_dir="bob") if q["id"] == asked["id"])
        assert theirs["code"] == asked["code"], (theirs, asked)
        run("pair", "--confirm", asked["id"], data_dir="bob")
        paired = run("pair", "--confirm", asked["id"], data_dir="alice")
        assert paired["state"] == "paired", paired
        run("publish", a.data, "--tag", "bc-bob", data_dir="bob")
        with open(os.path.join(a.host_base, "job.py"), "w") as f:
            f.write(JOB)
        job = run("submit", f"{a.base}/job.py", "--party", "alice", "--party", "bob",
                  "--data", "bc-bob@1", data_dir="alice")
        job_started = time.monotonic()
        for name in ("bob", "alice"):
            shown = run("show", job["id"], data_dir=name)
            run("approve", job["id"], "--hash", shown["proposal_hash"], data_dir=name)
        done = run("result", job["id"], "--wait", "--timeout", "300", data_dir="alice")
        job_s = time.monotonic() - job_started
        assert done["state"] == "succeeded", done
        confinement = {name: run("show", job["id"], data_dir=name)["detail"].get("confinement")
                       for name in ("alice", "bob")}
        gui = ""
        if a.screenshot:
            shot = subprocess.run([*parley, "-m", "parley_screenshot", f"{a.base}/alice",
                                   f"{a.base}/screenshot.png"], capture_output=True, text=True,
                                  timeout=120)
            gui = shot.stdout.strip()
            if shot.returncode != 0:
                raise SystemExit(f"FAILED: the app's screenshot:\n{shot.stdout}{shot.stderr}")
    finally:
        for proc in nodes.values():
            proc.terminate()
        for proc in nodes.values():
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
    tensors = {}

    def find(value: object) -> None:
        if isinstance(value, dict):
            for key in ("sum", "mean"):
                if isinstance(value.get(key), dict) and "$tensor" in value[key]:
                    tensors[key] = value[key]["$tensor"]["data"]
            for v in value.values():
                find(v)
        elif isinstance(value, list):
            for v in value:
                find(v)

    find(done.get("result", done))
    out = {"version": version, "version_s": round(version_s, 2), "nodes_up_s": round(nodes_s, 2),
           "job_s": round(job_s, 2), "result": tensors, "gui": gui,
           "complete": {n: bool(c and c.get("complete")) for n, c in confinement.items()},
           "confinement": confinement}
    with open(a.out, "w") as f:
        json.dump(out, f, indent=1, sort_keys=True)
    print(f"{version}: --version {version_s:.2f}s, two nodes up {nodes_s:.1f}s, paired, job "
          f"{job_s:.1f}s, confinement complete {out['complete']}"
          + (f"; app: {gui}" if gui else ""))
    if set(tensors) != {"sum", "mean"}:
        raise SystemExit(f"FAILED: no sum and mean in the result: {json.dumps(done)[:2000]}")
    if not all(out["complete"].values()):
        raise SystemExit(f"FAILED: confinement not complete: {json.dumps(confinement)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
