"""``parley``: the command line. Every command but ``node`` talks to a running node's admin API.

Errors are printed as one line saying what happened and what to do; never a traceback. Text
that may come from a peer (names, titles, tags, reasons, job output) is printed through
node/display.py, control characters escaped; ``--json`` output is JSON-escaped.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from node.client import NodeClient, Party, results
from node.display import SafeLogRecords, safe, safe_data
from node.errors import ParleyError
from node.paths import data_dir

DATA_DIR_HELP = "the node's data directory (default: $PARLEY_DATA_DIR or the user data dir)"


def _print(args: argparse.Namespace, data: Any, text: Callable[[Any], str]) -> None:
    """``data`` as JSON, or as the text ``text`` makes of it once every string is safe."""
    print(json.dumps(data, indent=2, sort_keys=True) if args.json else text(safe_data(data)))


def _client(args: argparse.Namespace) -> NodeClient:
    return NodeClient.for_data_dir(args.data_dir)


def _table(rows: list[list[str]], header: list[str]) -> str:
    if not rows:
        return "(none)"
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(r, widths)) for r in [header, *rows]]
    return "\n".join(line.rstrip() for line in lines)


# -- commands --------------------------------------------------------------------------------
def cmd_node(args: argparse.Namespace) -> int:
    from node import settings
    from node.server import NodeServer, serve_forever

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    for handler in logging.getLogger().handlers:
        handler.addFilter(SafeLogRecords())
    path = data_dir(args.data_dir)
    saved = settings.load(path)  # what the owner saved in the app; flags win
    args.name = args.name or saved.get("name")
    args.host = args.host or saved.get("host") or "127.0.0.1"
    args.port = args.port if args.port is not None else int(saved.get("port") or 0)
    server = NodeServer(path, args.name or path.name, host=args.host, peer_port=args.port,
                        admin_port=args.admin_port,
                        accept_reduced_isolation=args.accept_reduced_isolation,
                        mdns=not args.no_mdns, mdns_interfaces=args.mdns_interface or None,
                        warm_workers=args.warm_workers, max_parties=args.max_jobs,
                        min_rows=args.min_rows)
    asyncio.run(serve_forever(server))
    return 0


def _dp_arg(args: argparse.Namespace) -> dict[str, Any] | None:
    """--dp-epsilon E --dp-bounds LOW:HIGH[,LOW:HIGH...] as node/privacy.py's ``dp``; one pair
    stands for every column (the node checks the count against the dataset's columns)."""
    if args.dp_epsilon is None:
        if args.dp_bounds:
            raise ParleyError("--dp-bounds goes with --dp-epsilon (the budget)")
        return None
    if not args.dp_bounds:
        raise ParleyError("--dp-epsilon needs --dp-bounds LOW:HIGH (per column, comma "
                          "separated, or one pair for every column)")
    try:
        bounds = [[float(x) for x in pair.split(":")] for pair in args.dp_bounds.split(",")]
    except ValueError:
        raise ParleyError(f"--dp-bounds {args.dp_bounds!r}: write LOW:HIGH pairs, e.g. "
                          "0:120,0:1") from None
    return {"epsilon": args.dp_epsilon, "bounds": bounds}


def cmd_publish(args: argparse.Namespace) -> int:
    dp = _dp_arg(args)
    asset = _client(args).publish(args.file, tags=args.tag, name=args.name,
                                  description=args.description, label_column=args.label,
                                  min_rows=args.min_rows, dp=dp)
    _print(args, asset, lambda a: "\n".join(
        [f"published {a['kind']} {a['id']} '{a['name']}' tags {', '.join(a['tags']) or '(none)'}"]
        + [f"WARNING: {w}" for w in a.get("warnings", [])]))
    return 0


def cmd_privacy(args: argparse.Namespace) -> int:
    client = _client(args)
    privacy: dict[str, Any] = {}
    if args.min_rows is not None:
        privacy["min_rows"] = args.min_rows
    if args.no_dp:
        privacy["dp"] = None
    else:
        dp = _dp_arg(args)
        if dp is not None:
            privacy["dp"] = dp
    asset: dict[str, Any] | None
    if privacy:
        asset = client.update_asset(args.asset, privacy=privacy)
    else:
        asset = next((a for a in client.assets() if a["id"] == args.asset), None)
        if asset is None:
            raise ParleyError(f"no asset {args.asset} here; `parley assets` lists them")
    _print(args, asset, _privacy_text)
    return 0


def _privacy_text(asset: dict[str, Any]) -> str:
    settings = asset["schema"].get("privacy") or {}
    dp = settings.get("dp")
    return (f"{asset['name']} ({asset['id']}): a value revealed to anyone but this node must "
            f"aggregate at least {settings.get('min_rows', '?')} of its rows\n"
            + (f"differential privacy: budget epsilon {dp['epsilon']:g}, bounds "
               + ", ".join(f"{lo:g}..{hi:g}" for lo, hi in dp["bounds"]) if dp else
               "differential privacy: off"))


def cmd_unpublish(args: argparse.Namespace) -> int:
    out = _client(args).remove_asset(args.asset)
    _print(args, out, lambda o: f"unpublished {o['removed']}; its data is deleted from this node")
    return 0


def _shape(asset: dict[str, Any]) -> str:
    schema = asset["schema"]
    if asset["kind"] == "dataset":
        label = f" + label '{schema['label']['name']}'" if schema.get("label") else ""
        return "x".join(str(d) for d in schema["shape"]) + label
    ins = schema.get("inputs", [{}])[0].get("shape", [])
    return "in " + "x".join("?" if d is None else str(d) for d in ins)


def cmd_status(args: argparse.Namespace) -> int:
    _print(args, _client(args).status(), _status_text)
    return 0


def _status_text(s: dict[str, Any]) -> str:
    counts, parties, warm = s["counts"], s["parties"], s["warm_workers"]
    confinement = s.get("confinement", {})
    pool = (f"{warm['ready']} of {warm['size']} ready"
            + (f", {warm['starting']} starting" if warm["starting"] else "")
            + (f" ({warm['held']} waiting for the running job to end)" if warm.get("held")
               else "")
            + f", {warm['memory_bytes'] / 2**20:.0f} MB"
            + (f" (refill paused: {warm['paused']})" if warm["paused"] else "")
            if warm["size"] else "off (every job starts its party process cold)")
    stall = s.get("loop", {})
    lines = [
        f"node {s['name']} ({s['id']}), Parley {s['version']}",
        f"  peer API     {s['url']}",
        f"  data dir     {s['data_dir']}",
        f"  jail         {'complete' if confinement.get('complete') else 'reduced'}",
        f"  peers        {counts['paired_peers']} paired, {counts['pending_pairings']} "
        f"pairing request(s) waiting",
        f"  inbox        {counts['pending_proposals']} proposal(s) waiting for you",
        f"  jobs         {parties['running']} running here (at most {parties['max']} at once), "
        f"{parties['queued']} queued",
        f"  warm workers {pool}",
    ]
    if stall:
        lines.append(f"  event loop   longest stall {stall['longest_stall_ms']:.0f} ms since "
                     f"start, {stall['last_stall_ms']:.0f} ms in the last minute")
    return "\n".join(lines)


def cmd_assets(args: argparse.Namespace) -> int:
    assets = _client(args).assets(args.tag)
    _print(args, assets, lambda rows: _table(
        [[a["id"], a["kind"], a["name"], ",".join(a["tags"]), _shape(a)] for a in rows],
        ["ID", "KIND", "NAME", "TAGS", "SHAPE"]))
    return 0


def _party(text: str) -> Party:
    if not text or "=" in text or "/" in text:
        raise ParleyError(f"--party {text!r}: name a paired peer (or this node) by its name "
                          f"or node id; `parley peers` lists them")
    return Party(text)


def _binding(text: str, kind: str) -> dict[str, Any]:
    tag, sep, rank = text.rpartition("@")
    if not sep or not rank.isdigit():
        raise ParleyError(f"--{kind} {text!r}: write TAG@RANK, e.g. bc-data@1")
    return {"tag": tag, "rank": int(rank), "kind": "dataset" if kind == "data" else "model"}


def plan_output(plan: Any) -> int:
    return plan.get("output_to", 0) if isinstance(plan, dict) else 0


def cmd_submit(args: argparse.Namespace) -> int:
    try:
        text = Path(args.file).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ParleyError(f"cannot read {args.file}: {exc}") from None
    saved: dict[str, Any] = {}
    if args.file.endswith(".json"):
        try:
            loaded = json.loads(text)
        except ValueError as exc:
            raise ParleyError(f"{args.file} is not valid JSON: {exc}") from None
        if isinstance(loaded, dict) and "parties" in loaded:
            saved = loaded  # a whole job, as the app's Compose view saves it
            code: dict[str, Any] = {k: saved[k] for k in ("plan", "source", "entry")
                                    if k in saved}
        else:
            code = {"plan": loaded}
    else:
        code = {"source": text, "entry": args.entry}
    if not args.party and not saved.get("parties"):
        raise ParleyError("name the parties in rank order: --party NAME (repeat), or submit a "
                          "job file that lists them")
    plan = code.get("plan")
    spec = {
        **saved, **code,
        "title": args.title or saved.get("title") or Path(args.file).stem,
        "parties": [_party(p).spec() for p in args.party] if args.party else saved["parties"],
        "bindings": [_binding(b, "data") for b in args.data]
        + [_binding(b, "model") for b in args.model] if args.data or args.model
        else saved.get("bindings", []),
        "result_to": args.result_to or saved.get("result_to") or (
            [plan_output(plan)] if plan is not None else [0]),
        "limits": {"time_s": args.time_limit} if args.time_limit else saved.get("limits", {}),
    }
    client = _client(args)
    job = client.submit(spec)
    if not args.wait:
        _print(args, job, lambda j: f"submitted {j['id']}; `parley result {j['id']}` when done")
        return 0
    if not args.json:
        print(f"submitted {job['id']}; waiting for approvals and the run...", file=sys.stderr)
    return _show_result(args, client.wait(job["id"], timeout=args.timeout))


def _show_result(args: argparse.Namespace, job: dict[str, Any]) -> int:
    if args.json:
        print(json.dumps(job, indent=2, sort_keys=True))
        return 0 if job["state"] == "succeeded" else 1
    values = results(job) if job["state"] == "succeeded" else {}
    job = safe_data(job)
    print(f"job {job['id']}: {job['state']}" + (f" ({job['reason']})" if job["reason"] else ""))
    for rank, party in sorted(job["detail"].get("parties", {}).items()):
        print(f"  rank {rank} {party.get('name', '')}: {party.get('state')}"
              + (f": {party['reason']}" if party.get("reason") else ""))
    if job["state"] == "succeeded":
        for rank, value in values.items():
            print(f"  result released by rank {rank}:\n{safe_data(value)}")
        return 0
    return 1


def cmd_result(args: argparse.Namespace) -> int:
    client = _client(args)
    job = client.wait(args.job, timeout=args.timeout) if args.wait else client.orchestration(
        args.job)
    return _show_result(args, job)


def cmd_jobs(args: argparse.Namespace) -> int:
    jobs = _client(args).jobs(role=args.role, states=args.state)
    _print(args, jobs, lambda rows: _table(
        [[j["id"], j["role"], j["state"], j["title"][:30],
          time.strftime("%H:%M:%S", time.localtime(j["created_at"])), j["reason"][:60]]
         for j in rows], ["ID", "ROLE", "STATE", "TITLE", "CREATED", "REASON"]))
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    from node.review import render_text

    job = _client(args).job(args.job, role="party")
    review = job["detail"].get("review") or {}
    review["diff_lines"] = (review.get("diff_from_last_approved") or "").splitlines()
    _print(args, job, render_text)
    return 0


def cmd_policy(args: argparse.Namespace) -> int:
    from node.plans import POLICY_KINDS

    client = _client(args)
    if args.action in ("add", "remove"):
        kinds = ", ".join(POLICY_KINDS)
        if not args.orchestrator or args.kind not in POLICY_KINDS:
            raise ParleyError(f"write: parley policy {args.action} PEER KIND, where PEER is a "
                              f"paired peer's name or node id and KIND one of {kinds}")
        if args.action == "add":
            client.add_policy(args.orchestrator, args.kind)
        else:
            client.remove_policy(args.orchestrator, args.kind)
    policies = client.policies()
    _print(args, policies, lambda rows: _table(
        [[p["orchestrator"], p["node_id"], p["kind"]] for p in rows],
        ["ORCHESTRATOR", "NODE ID", "APPROVED WITHOUT ASKING"]))
    return 0


def _is_job_id(text: str) -> bool:
    import re

    return bool(re.fullmatch(r"j-[0-9a-f]{8,32}", text)) and not Path(text).exists()


def cmd_dry_run(args: argparse.Namespace) -> int:
    client = _client(args)
    if _is_job_id(args.file):  # a proposal received: its own reveal map and limits
        out = client.dry_run_job(args.file)
    else:
        try:
            source = Path(args.file).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ParleyError(f"cannot read {args.file}: {exc}") from None
        out = client.dry_run(source, args.entry, args.time_limit)
    if args.json:
        print(json.dumps(out, indent=2, sort_keys=True))
        return 0 if out["state"] == "succeeded" else 1
    for m in out.get("mocked", []):
        print(f"mock data for '{safe(m['tag'])}' ({m['kind']}, shaped like "
              f"{m['shaped_like']})")
    if out["state"] == "succeeded":
        from node.wire import decode

        value = decode(out["result"])
        print(f"dry run succeeded; result:\n{safe_data(value)}")
    else:
        print(f"dry run {out['state']}: {safe(out['reason'])}")
    return 0 if out["state"] == "succeeded" else 1


def cmd_approve(args: argparse.Namespace) -> int:
    client = _client(args)
    given = args.hash
    if not given:  # approve what the owner sees now, and only after they say yes
        job = client.job(args.job, role="party")
        if not sys.stdin.isatty():
            raise ParleyError(f"give the hash you reviewed: parley approve {args.job} --hash "
                              f"{job['proposal_hash'][:12]} (`parley show {args.job}` prints it)")
        print(f"{args.job}: '{safe(job['title'])}' from {safe(job['orchestrator'])}, proposal "
              f"hash {job['proposal_hash'][:12]}")
        if input("approve exactly this proposal? [y/N] ").strip().lower() not in ("y", "yes"):
            print("not approved")
            return 1
        given = job["proposal_hash"]
    job = client.approve(args.job, given, always=args.always)
    _print(args, job, lambda j: f"approved {j['id']}" + (
        f"; later {j['kind']} jobs from {j['orchestrator']} are approved without asking"
        if args.always else ""))
    return 0


def cmd_reject(args: argparse.Namespace) -> int:
    job = _client(args).reject(args.job, args.reason)
    _print(args, job, lambda j: f"rejected {j['id']}: {j['reason']}")
    return 0


def cmd_cancel(args: argparse.Namespace) -> int:
    job = _client(args).cancel(args.job, args.reason)
    _print(args, job, lambda j: f"{j['id']}: {j['state']}")
    return 0


def cmd_peers(args: argparse.Namespace) -> int:
    client = _client(args)

    def text(rows: list[dict[str, Any]]) -> str:
        rows = safe_data(rows)
        table = _table([[p["name"], p["node_id"], p["state"] + ("" if p["online"] else
                                                                 " (offline)"),
                         f"{p['host']}:{p['port']}", p["source"]] for p in rows],
                       ["NAME", "NODE ID", "TRUST", "ADDRESS", "SEEN BY"])
        warnings = [f"WARNING: {p['name']} ({p['node_id']}): {p['name_clash']}" for p in rows
                    if p.get("name_clash")]
        def todo(q: dict[str, Any]) -> str:
            return ("confirmed here" if q["local_confirmed"]
                    else f"confirm with parley pair --confirm {q['id']}")

        pending = [f"pairing request {q['id']} with {q['name']}: code {q['code']} ({todo(q)})"
                   for q in safe_data(client.pairings()) if q["state"] == "pending"]
        return "\n".join([table, *warnings, *pending])

    if not args.watch:
        _print(args, client.peers(), text)  # text() makes the rows safe itself
        return 0
    last = None
    try:
        while True:
            rows = client.peers()
            if rows != last:
                print(json.dumps(rows) if args.json else f"--- {time.strftime('%H:%M:%S')}\n"
                      + text(rows), flush=True)
                last = rows
            time.sleep(1.0)
    except KeyboardInterrupt:
        return 0


def cmd_pair(args: argparse.Namespace) -> int:
    client = _client(args)
    if args.confirm or args.reject:
        out = client.decide_pairing(args.confirm or args.reject, confirm=bool(args.confirm))
        _print(args, out, lambda q: f"pairing with {q['name']}: {q['state']}"
               + ("" if q["state"] == "paired" else " (waiting for the other owner)"
                  if q["local_confirmed"] else ""))
        return 0
    if not args.peer:
        _print(args, client.pairings(), lambda rows: _table(
            [[q["id"], q["name"], q["code"], q["state"], f"{q['expires_in_s']}s"] for q in rows],
            ["PAIRING", "PEER", "CODE", "STATE", "EXPIRES"]))
        return 0
    out = client.pair(args.peer)
    _print(args, out, lambda q: f"pairing with {q['name']} ({q['node_id']})\n"
           f"  code: {q['code']}\n  check that {q['name']}'s owner sees the same code, then "
           f"run: parley pair --confirm {q['id']}")
    return 0


def cmd_unpair(args: argparse.Namespace) -> int:
    out = _client(args).unpair(args.peer)

    def said(p: dict[str, Any]) -> str:
        line = f"unpaired {p['name']} ({p['node_id']})"
        if p.get("peer_told"):
            return line + f"; {p['name']} was told and unpaired this node too"
        if p.get("peer_told") is False:
            return line + (f"; {p['name']} was not told ({p.get('peer_told_detail')}): it "
                           f"still lists this node as paired until its owner unpairs too")
        return line

    _print(args, out, said)
    return 0


def cmd_add_peer(args: argparse.Namespace) -> int:
    out = _client(args).add_peer(args.address)
    _print(args, out, lambda o: f"added {o['added']}; `parley peers` shows it once it answers")
    return 0


def cmd_search(args: argparse.Namespace) -> int:
    out = _client(args).search(args.tag, args.timeout)

    def text(o: dict[str, Any]) -> str:
        rows = [[m["node"]["name"], a["id"], a["kind"], a["name"], ",".join(a["tags"]),
                 _shape(a)] for m in o["matches"] for a in m["assets"]]
        lines = [_table(rows, ["NODE", "ID", "KIND", "NAME", "TAGS", "SHAPE"])]
        lines += [f"slow, not waited for: {n}" for n in o["slow"]]
        lines += [f"no answer from {e['node']}: {e['error']}" for e in o["errors"]]
        return "\n".join(lines)

    _print(args, out, text)
    return 0


def cmd_audit(args: argparse.Namespace) -> int:
    out = _client(args).audit(args.kind, args.peer, args.job)
    if args.tail:
        out["entries"] = out["entries"][-args.tail:]

    def text(o: dict[str, Any]) -> str:
        lines = [f"{e['seq']:5d} {e['time']} {e['kind']:<9} " + " ".join(
            f"{k}={v}" for k, v in sorted(e["fields"].items())) for e in o["entries"]]
        v = o["verify"]
        lines.append(f"chain: {'intact' if v['ok'] else 'BROKEN'} ({v['entries']} entries)"
                     + ("" if v["ok"] else f"; first bad entry {v['first_bad_seq']}: "
                        f"{v['problem']}"))
        return "\n".join(lines)

    _print(args, out, text)
    return 0 if out["verify"]["ok"] else 1


def cmd_gui(args: argparse.Namespace) -> int:
    """The desktop app. It is exec'd rather than imported: node/ never imports the GUI, and a
    headless node never loads Qt."""
    import os

    argv = [sys.executable, "-m", "gui"] + (["--data-dir", args.data_dir] if args.data_dir
                                           else [])
    os.execv(sys.executable, argv)
    return 1  # not reached


def cmd_demo(args: argparse.Namespace) -> int:
    """With a display, the demo you can watch (gui/demo_windows.py, exec'd: node/ never
    imports the GUI); without one, or with --headless, the same jobs in the terminal."""
    import os

    if not args.headless and (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        argv = [sys.executable, "-m", "gui.demo_windows"] + (
            ["--interactive"] if args.interactive else []) + (["--keep"] if args.keep else [])
        os.execv(sys.executable, argv)
    from node.demo import main as demo_main

    return demo_main(keep=args.keep)


def cmd_bench(args: argparse.Namespace) -> int:
    from node import bench

    return bench.main(args)


# -- parser ----------------------------------------------------------------------------------
def _privacy_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--min-rows", type=int, help="a dataset's rows a value revealed to anyone "
                   "else must aggregate at least (default 10; 1 turns the check off)")
    p.add_argument("--dp-epsilon", type=float, help="turn on differential privacy with this "
                   "total budget (epsilon) for the dataset")
    p.add_argument("--dp-bounds", help="with --dp-epsilon: LOW:HIGH per column, comma "
                   "separated, or one pair for every column; values are clipped to them")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="parley", description="Compute together on private "
                                     "data with secure multi-party computation (CrypTen).")
    from node import __version__

    parser.add_argument("--version", action="version", version=f"parley {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, func: Callable[[argparse.Namespace], int], help_: str,
            json_out: bool = True) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_, description=help_)
        p.add_argument("--data-dir", help=DATA_DIR_HELP)
        if json_out:
            p.add_argument("--json", action="store_true", help="print JSON")
        p.set_defaults(func=func)
        return p

    p = add("node", cmd_node, "run this owner's node (headless daemon)", json_out=False)
    p.add_argument("--name", help="display name (default: the data dir's name)")
    p.add_argument("--host", help="address for the peer API and parties (default: the saved "
                   "setting, else 127.0.0.1)")
    p.add_argument("--port", type=int, help="peer API port (default: the saved setting, else "
                   "any free)")
    p.add_argument("--admin-port", type=int, default=0, help="admin API port on 127.0.0.1")
    p.add_argument("--accept-reduced-isolation", action="store_true",
                   help="run source jobs even where the OS offers no seccomp or Landlock")
    p.add_argument("--no-mdns", action="store_true", help="do not publish or browse over mDNS")
    p.add_argument("--mdns-interface", action="append", default=[],
                   help="IPv4 address to use for mDNS (repeat; default: all interfaces)")
    p.add_argument("--warm-workers", type=int, default=None, metavar="N",
                   help="party processes kept started ahead of jobs, about 240 MB each "
                        "(default 2, at most 8; 0 turns the pool off)")
    p.add_argument("--max-jobs", type=int, default=None, metavar="N",
                   help="jobs this node computes in at once; more wait, queued (default: one "
                        "per core, at least 2)")
    p.add_argument("--min-rows", type=int, help="for datasets published here without their "
                   "own: the fewest rows a value revealed to others must aggregate (default 10)")

    add("status", cmd_status, "this node: address, jail, peers, inbox, jobs, warm workers")

    p = add("publish", cmd_publish, "import a dataset (.csv, .npy) or model (.onnx)")
    p.add_argument("file")
    p.add_argument("--tag", action="append", default=[], help="a tag (repeat for several)")
    p.add_argument("--name")
    p.add_argument("--description", default="")
    p.add_argument("--label", help="CSV: the label column, kept apart from the features")
    _privacy_args(p)

    p = add("privacy", cmd_privacy, "show or change what a dataset lets others see: its "
            "minimum aggregation and its differential-privacy budget")
    p.add_argument("asset", help="the dataset's id (`parley assets`)")
    _privacy_args(p)
    p.add_argument("--no-dp", action="store_true", help="turn differential privacy off")

    p = add("unpublish", cmd_unpublish, "remove an asset (by id) and delete its data here")
    p.add_argument("asset")

    p = add("assets", cmd_assets, "list this node's assets")
    p.add_argument("--tag", action="append", default=[], help="only assets with this tag")

    p = add("submit", cmd_submit, "send a job to parties: a Python file with one function, "
            "a plan (.json), or a whole job saved by the app (.json with its parties)")
    p.add_argument("file")
    p.add_argument("--party", action="append", default=[],
                   help="a party (a paired peer or this node, by name or node id), in rank "
                        "order (repeat)")
    p.add_argument("--data", action="append", default=[], help="TAG@RANK: a dataset binding")
    p.add_argument("--model", action="append", default=[], help="TAG@RANK: a model binding")
    p.add_argument("--entry", default="run", help="the function to run (default: run)")
    p.add_argument("--result-to", type=int, action="append",
                   help="rank whose return value comes back to you (default: 0)")
    p.add_argument("--title")
    p.add_argument("--time-limit", type=float, help="seconds for the whole run")
    p.add_argument("--wait", action="store_true", help="wait for the result and print it")
    p.add_argument("--timeout", type=float, default=3600, help="how long --wait waits")

    p = add("jobs", cmd_jobs, "list jobs: proposals received and jobs orchestrated")
    p.add_argument("--role", choices=["party", "orchestrator"])
    p.add_argument("--state", action="append", default=[])

    p = add("show", cmd_show, "review a proposal: source with line numbers, assets, reveals")
    p.add_argument("job")

    p = add("policy", cmd_policy, "approve some jobs without asking: a plan kind from an "
            "orchestrator")
    p.add_argument("action", choices=["list", "add", "remove"])
    p.add_argument("orchestrator", nargs="?", default="")
    p.add_argument("kind", nargs="?", default="",
                   help="inference, train, statistics, source (jailed code: think twice), or "
                        "any (every job from that peer: for your own nodes)")

    p = add("dry-run", cmd_dry_run, "run a job file as one party, through the same jail: on "
            "this node's data for the tags it holds, on mock data for the others; or a received "
            "proposal (JOB) on mock data, under that proposal's own reveal map and limits")
    p.add_argument("file", metavar="FILE_OR_JOB")
    p.add_argument("--entry", default="run")
    p.add_argument("--time-limit", type=float, default=180,
                   help="seconds the dry run may take (default 180; a JOB uses its own)")

    p = add("approve", cmd_approve, "approve a proposal you reviewed")
    p.add_argument("job")
    p.add_argument("--hash", help="the proposal hash you reviewed, or its first 8+ characters "
                   "(refused if it differs); without it, you are asked to confirm")
    p.add_argument("--always", action="store_true", help="also approve later jobs of this "
                   "kind from this orchestrator without asking (a policy)")

    p = add("reject", cmd_reject, "reject a proposal, with a reason sent back")
    p.add_argument("job")
    p.add_argument("--reason", required=True)

    p = add("cancel", cmd_cancel, "cancel a job you orchestrate")
    p.add_argument("job")
    p.add_argument("--reason", default="")

    p = add("result", cmd_result, "state, per-party progress and result of a job you sent")
    p.add_argument("job")
    p.add_argument("--wait", action="store_true")
    p.add_argument("--timeout", type=float, default=3600)

    p = add("peers", cmd_peers, "peers on the network and their trust state")
    p.add_argument("--watch", action="store_true", help="keep watching for changes")

    p = add("pair", cmd_pair, "pair with a peer (NAME or HOST:PORT); without one, list "
            "pairing requests")
    p.add_argument("peer", nargs="?")
    p.add_argument("--confirm", metavar="PAIRING", help="the codes match: confirm")
    p.add_argument("--reject", metavar="PAIRING", help="the codes differ: reject")

    p = add("unpair", cmd_unpair, "revoke a paired peer")
    p.add_argument("peer")

    p = add("add-peer", cmd_add_peer, "add a peer by HOST:PORT where multicast does not reach")
    p.add_argument("address")

    p = add("search", cmd_search, "find assets by tags across every paired peer")
    p.add_argument("tag", nargs="+")
    p.add_argument("--timeout", type=float, default=3.0, help="seconds to wait for peers")

    p = add("audit", cmd_audit, "this node's audit log, with its hash chain verified")
    p.add_argument("--kind", help="only entries of this kind (refusal, proposal, decision, "
                   "run, reveal, pairing, policy, claim)")
    p.add_argument("--peer", help="only entries about this node id, name or address")
    p.add_argument("--job", help="only entries about this job")
    p.add_argument("--tail", type=int, help="only the last N entries")

    add("gui", cmd_gui, "open the desktop app for this data dir's node (starts the node if "
        "none runs)", json_out=False)

    p = add("demo", cmd_demo, "three local nodes compute on data none of them shares",
            json_out=False)
    p.add_argument("--keep", action="store_true", help="keep the nodes' data dirs")
    p.add_argument("--headless", action="store_true", help="no windows, even with a display")
    p.add_argument("--interactive", action="store_true", help="with windows: approve in "
                   "alice's and bob's windows yourself")

    p = add("bench", cmd_bench, "the same workloads natively and through Parley, side by side")
    from node import bench

    bench.add_arguments(p)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except ParleyError as exc:
        print(f"parley: error: {safe(exc.message)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `parley show J | head`: the reader left; so do we, quietly
        import os

        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141


if __name__ == "__main__":
    sys.exit(main())
