"""``parley bench``'s report as a terminal table, as bench.json, and as a chart (bench.png).

The chart is drawn by the app's layer (``python -m gui.bench_chart``, Qt offscreen) in a process
of its own: the headless core never imports Qt (pyproject.toml's import contracts), and a
machine without it still gets the table and the JSON.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

__all__ = ["PHASE_COLUMNS", "check_lines", "draw_chart", "table", "write"]


def _num(value: Any, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _ratio(fig: dict[str, Any]) -> str:
    if fig.get("median") is None:
        return "-"
    if fig["low"] == fig["high"]:
        return f"{fig['median']:.2f}"
    return f"{fig['median']:.2f} [{fig['low']:.2f}-{fig['high']:.2f}]"


def _load(values: list[float]) -> str:
    return "/".join(f"{v:.2f}" for v in values)


def table(report: dict[str, Any]) -> str:
    """The report for a terminal: ratios, phases, costs, growth, checks."""
    lines = [*_header(report), "", *_ratios(report), "", *_phases(report), "",
             *_costs(report)]
    if report["scaling"]:
        lines += ["", *_growth(report)]
    if report.get("tls"):
        lines += ["", *_tls(report)]
    loop = report.get("loop")
    if loop:
        lines += ["", *_loop(loop)]
    lines += ["", *check_lines(report)]
    if report.get("files"):
        lines.append("written: " + ", ".join(report["files"]))
    if report.get("chart_error"):
        lines.append(f"no chart: {report['chart_error']}")
    return "\n".join(lines)


def _header(report: dict[str, Any]) -> list[str]:
    m = report["machine"]
    quick = " --quick" if report["quick"] else ""
    return [(f"parley bench{quick}: {len(report['workloads'])} workload(s), {report['pairs']} "
             f"A/B pair(s) each, {m['cores']} cores, {report['seconds']:.0f} s; load average "
             f"(1/5/15 min) {_load(m['load_before'])} before, {_load(m['load_after'])} after"),
            *textwrap.wrap(f"native: {report['arms']['native']}", 100, initial_indent="  ",
                           subsequent_indent="    "),
            *textwrap.wrap(f"Parley: {report['arms']['parley']}", 100, initial_indent="  ",
                           subsequent_indent="    ")]


def _ratios(report: dict[str, Any]) -> list[str]:
    lines = ["Parley / native: median of the per-pair ratios [95% bootstrap interval]",
             (f"  {'workload':<13}{'p':>2}  {'size':<15}{'native s':>9}{'Parley s':>9}  "
              f"{'whole':<19}{'warm':<19}{'compute':<19}")]
    for r in report["workloads"]:
        ratios = r["ratios"]
        lines.append(f"  {r['name']:<13}{r['parties']:>2}  {r['size']:<15}"
                     f"{_num(r['native']['wall_s']):>9}{_num(r['parley']['wall_s']):>9}  "
                     f"{_ratio(ratios['wall_s']):<19}{_ratio(ratios['warm_s']):<19}"
                     f"{_ratio(ratios['compute_s']):<19}")
    aa = report.get("aa")
    if aa:
        ratios = aa["ratios"]
        lines += [(f"  A/A, {aa['workload']} native / native: whole {_ratio(ratios['wall_s'])}, "
                   f"warm {_ratio(ratios['warm_s'])}, compute {_ratio(ratios['compute_s'])}"),
                  f"  {aa['verdict']}"]
    return lines


PHASE_COLUMNS = ("start", "rendezvous", "load", "compute", "reveal", "return")


def _phases(report: dict[str, Any]) -> list[str]:
    lines = ["Phases: median seconds of the slowest party, native | Parley",
             (f"  {'workload':<13}" + "".join(f"{h:<14}" for h in PHASE_COLUMNS)
              + f"{'approve':>8}{'jail':>6}")]
    for r in report["workloads"]:
        n, p = r["native"]["phases"], r["parley"]["phases"]
        cells = "".join(f"{_num(n.get(k + '_s')) + ' | ' + _num(p.get(k + '_s')):<14}"
                        for k in PHASE_COLUMNS)
        lines.append(f"  {r['name']:<13}{cells}{_num(p.get('approve_s')):>8}"
                     f"{_num(p.get('setup_s')):>6}")
    return lines


def _costs(report: dict[str, Any]) -> list[str]:
    lines = [("Costs, median per run. CPU seconds: the parties for the job (and over their "
              "whole life, imports included); Parley's nodes, and their children meanwhile; "
              "this process (native launcher | Parley client). Rounds and MB each party sent. "
              "Plaintext: the same computation in torch"),
             (f"  {'workload':<13}{'CPU native':>13}{'CPU Parley':>14}{'nodes':>7}"
              f"{'children':>9}{'bench':>12}  {'rounds':<16}{'MB/party':<18}{'plain ms':>9}")]
    for r in report["workloads"]:
        nc, pc = r["native"]["cpu"], r["parley"]["cpu"]
        native_cpu = f"{_num(nc.get('parties_job_s'))} ({_num(nc.get('parties_s'))})"
        bench = f"{_num(nc.get('launcher_s'))} | {_num(pc.get('launcher_s'))}"
        parley_cpu = (f"{_num(pc.get('parties_job_s'))} ({_num(pc.get('parties_s'))})"
                      f"{_num(pc.get('nodes_s')):>7}{_num(pc.get('children_s')):>9}"
                      f"{bench:>12}")
        fp = r["fingerprint"]["parties"]
        rounds = "/".join(str(q["native"]["rounds"]) for q in fp)
        mb = "/".join(f"{q['native']['bytes'] / 1e6:.2f}" for q in fp)
        lines.append(f"  {r['name']:<13}{native_cpu:>13}{parley_cpu:>42}  "
                     f"{rounds:<16}{mb:<18}{r['plaintext_s'] * 1e3:>9.2f}")
    return lines


def _tls(report: dict[str, Any]) -> list[str]:
    lines = [("TLS on the party links (store and gloo pairs between nodes), against the same "
              "jobs on nodes with plain TCP links, interleaved. Ratios: with / without, "
              "median of pairs [95% bootstrap]. MB: sent between the nodes, all parties "
              "(plain: the gloo and store bytes; TLS: on the wire, as TCP counted it)"),
             (f"  {'workload':<10}{'whole s':>15}{'compute s':>17}{'whole':>22}"
              f"{'compute':>22}{'rendezvous s':>16}{'nodes CPU s':>14}{'MB plain | TLS':>18}"
              f"{'load':>6}")]
    for r in report["tls"]:
        w, wo = r["with"], r["without"]
        mb = f"{r['bytes']['plain'] / 1e6:.3f} | {r['bytes']['tls'] / 1e6:.3f}"
        lines.append(
            f"  {r['name']:<10}{_num(w['wall_s']) + ' | ' + _num(wo['wall_s']):>15}"
            f"{_num(w['compute_s'], 3) + ' | ' + _num(wo['compute_s'], 3):>17}"
            f"{_ratio(r['ratios']['wall_s']):>22}{_ratio(r['ratios']['compute_s']):>22}"
            f"{_num(r['rendezvous_s']['with']) + ' | ' + _num(r['rendezvous_s']['without']):>16}"
            f"{_num(r['nodes_cpu_s']['with']) + ' | ' + _num(r['nodes_cpu_s']['without']):>14}"
            f"{mb:>18}{r['load_1min']:>6.2f}")
    return lines


def _growth(report: dict[str, Any]) -> list[str]:
    lines = ["How time and bytes grow with the problem size (medians; MB: all parties)",
             (f"  {'family':<30}{'rows':>6}{'native s':>10}{'Parley s':>10}"
              f"{'native compute':>16}{'Parley compute':>16}{'plain ms':>10}{'rounds':>8}"
              f"{'MB':>8}")]
    for s in report["scaling"]:
        lines.append(f"  {s['family']:<30}{s['rows']:>6}{_num(s['native_s']):>10}"
                     f"{_num(s['parley_s']):>10}{_num(s['native_compute_s'], 3):>16}"
                     f"{_num(s['parley_compute_s'], 3):>16}{s['plaintext_s'] * 1e3:>10.2f}"
                     f"{s['rounds']:>8}{s['bytes'] / 1e6:>8.2f}")
    return lines


def check_lines(report: dict[str, Any]) -> list[str]:
    checks = report["checks"]
    rows = report["workloads"]
    out = []
    if checks["results_agree"]:
        tolerances = sorted({r["results"]["tolerance"] for r in rows})
        out.append(f"results: both arms agree in all {len(rows)} workload(s) "
                   f"({'; '.join(tolerances)})")
    else:
        out += [f"RESULTS DIFFER: {p}" for p in checks["problems"] if "results differ" in p]
    if checks["fingerprints_equal"]:
        out.append("fingerprint: every party sent the same rounds and bytes in both arms")
    else:
        out.append("FINGERPRINTS DIFFER (rounds and bytes each party sent, Parley against "
                   "native):")
        out += [f"  {p.split(': the fingerprints differ: ', 1)[0]}: "
                f"{p.split(': the fingerprints differ: ', 1)[1]}"
                for p in checks["problems"] if "fingerprints differ" in p]
    return out


def write(report: dict[str, Any], out: Path) -> None:
    """bench.json and bench.png in ``out``; the files written are listed in the report."""
    out.mkdir(parents=True, exist_ok=True)
    path = out / "bench.json"
    path.write_text(json.dumps(report, indent=2))
    report["files"] = [str(path)]
    chart = out / "bench.png"
    error = draw_chart(path, chart)
    if error:
        report["chart_error"] = error
    else:
        report["files"].append(str(chart))
    path.write_text(json.dumps(report, indent=2))


def draw_chart(report_json: Path, png: Path, timeout: float = 120) -> str:
    """Draw bench.png in the app's layer; an empty string, or why there is no chart."""
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen"}
    try:
        done = subprocess.run([sys.executable, "-m", "gui.bench_chart", str(report_json),
                               str(png)], env=env, capture_output=True, text=True, check=False,
                              timeout=timeout, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        return f"drawing it took more than {timeout:.0f} s"
    except OSError as exc:
        return f"could not start the chart process ({exc})"
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no message"])[-1]
        return f"the chart process failed: {last}"
    return ""


def _loop(loop: dict[str, Any]) -> list[str]:
    """The longest stall of the nodes' event loops, and what the node was doing in it."""
    stall = loop["longest_stall_ms"]
    if not stall:
        return ["nodes' event loops: longest stall during the Parley runs under 20 ms (none "
                "recorded)"]
    line = f"nodes' event loops: longest stall during the Parley runs {stall:.0f} ms"
    if "runs_over_50ms" in loop:
        line += f" ({loop['runs_over_50ms']} of {loop['runs']} runs had one over 50 ms)"
    loop_ms, node_ms = loop.get("loop_cpu_ms", 0.0), loop.get("node_cpu_ms", 0.0)
    window = stall + 20  # the stall and the 20 ms timer it delayed
    # the loop's thread running code, the node's other threads (holding the GIL some of it),
    # and the time the node ran nothing at all (waiting for a core)
    return [line, (f"  of its {window:.0f} ms the loop's thread ran {loop_ms:.0f}, the node's "
                   f"other threads {max(node_ms - loop_ms, 0):.0f}, and the node waited for a "
                   f"core {max(window - node_ms, 0):.0f}")]
