"""Run the four speed benchmarks one after another and write docs/performance.md's tables.

    python benchmarks/run_perf.py [--quick] [--work DIR] [--bundle DIR] [--no-docs]

Runs perf_scoring.py, perf_pipeline.py, perf_footprint.py and perf_model.py with the same options
(each writes ``benchmarks/results/perf_<name>.json``), then rewrites the part of
``docs/performance.md`` between the ``generated`` markers with their four tables, the exact command,
the machine and its load before and after. The hand-written text around the markers is kept.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import perf_common as common

BENCHMARKS = ("scoring", "pipeline", "footprint", "model")
DOC = common.ROOT / "docs" / "performance.md"
START, END = "<!-- generated: start (benchmarks/run_perf.py) -->", "<!-- generated: end -->"
QUICK_NOTE = ("> **--quick run**: fewer rounds and frames than the documented run; use it to "
              "check that the benchmarks work, not to quote.")


def run_all(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    """Run each benchmark as its own process; return their JSON results."""
    options = ["--work", str(args.work)]
    if args.quick:
        options.append("--quick")
    if args.bundle is not None:
        options += ["--bundle", str(args.bundle)]
    # Train (once) before timing anything, so that no benchmark's timing shares the CPU with it.
    common.ensure_bundle(args.work, args.quick, args.bundle)
    results = {}
    for name in BENCHMARKS:
        script = Path(__file__).with_name(f"perf_{name}.py")
        print(f"\n==> {script.name} {' '.join(options)}", flush=True)
        subprocess.run([sys.executable, str(script), *options], check=True)
        folder = common.results_dir(args.quick, args.work)
        results[name] = json.loads((folder / f"perf_{name}.json").read_text())
    return results


def section(result: dict[str, Any]) -> list[str]:
    lines = [f"### {result['title']}", "",
             f"`{result['command']}` — load average (1/5/15 min) at the end: "
             f"{' / '.join(map(str, result['machine']['load_avg_1_5_15']))}", ""]
    lines += common.table_lines(result["table"]["headers"], result["table"]["rows"])
    lines.append("")
    lines += [f"- {note}" for note in result["notes"]]
    return [*lines, ""]


def targets(results: dict[str, dict[str, Any]]) -> list[list[str]]:
    """One row per target of the issue, from the figures of this run."""
    verdict = {True: "met", False: "**NOT met**"}
    rows = [[f"int8 vs {t['vs']}, batch 1, {t['threads']} thread(s)", f"≥ {t['target']:g}× faster",
             f"{t['speedup']:.1f}×", verdict[t["met"]]]
            for t in results["scoring"]["figures"]["targets"]]
    pipe = results["pipeline"]["figures"]
    ratios = pipe["ratios_to_bare_same_threads"]
    for threads in sorted({key.rsplit("-", 1)[1] for key in ratios}):
        line, normal = ratios[f"line-{threads}"], ratios[f"normal-{threads}"]
        rows.append([f"pipeline ÷ bare batched invoke, {threads} thread(s), line with defects",
                     f"≥ {pipe['target_ratio']:.0%}",
                     f"{line:.0%} (defect-free line: {normal:.0%})",
                     verdict[line >= pipe["target_ratio"]]])
    foot = results["footprint"]["figures"]
    rows.append(["peak RSS of edge run", "≤ 100 MB", f"{foot['rss_mb']:.1f} MB",
                 verdict[foot["rss_mb"] <= 100.0]])
    first = foot["start_median_s"]["first message"]
    rows.append(["launch → first published message", "≤ 1 s", f"{first:.2f} s",
                 verdict[first <= 1.0]])
    loaded = foot["rss"]["forbidden_modules"]
    rows.append(["TensorFlow / Keras in the edge process", "none", ", ".join(loaded) or "none",
                 verdict[not loaded]])
    return rows


def generated(results: dict[str, dict[str, Any]], command: str, load_before: list[float],
              seconds: float, quick: bool) -> list[str]:
    machine = results["scoring"]["machine"]
    lines = [START, ""]
    if quick:
        lines += [QUICK_NOTE, ""]
    lines += [
        f"Made by `{command}` on {machine['utc'][:10]} in {seconds / 60:.0f} min: "
        f"{machine['cpu']}, {machine['cores']} cores, Python {machine['python']}, numpy "
        f"{machine['numpy']}, ai-edge-litert {machine['ai-edge-litert']}. Load average "
        f"(1/5/15 min) before the run: {' / '.join(f'{v:.2f}' for v in load_before)} — other "
        "jobs shared the two cores, which is why every comparison below comes from "
        "alternatives interleaved in the same run.", ""]
    lines += ["### Targets", ""]
    lines += common.table_lines(["target", "wanted", "measured", "verdict"], targets(results))
    lines.append("")
    for name in BENCHMARKS:
        lines += section(results[name])
    return [*lines, END]


def write_doc(block: list[str]) -> None:
    text = DOC.read_text(encoding="utf-8") if DOC.exists() else f"# Performance\n\n{START}\n{END}\n"
    if START not in text or END not in text:
        text = text.rstrip() + f"\n\n{START}\n{END}\n"
    head, rest = text.split(START, 1)
    tail = rest.split(END, 1)[1]
    DOC.write_text(head + "\n".join(block) + tail, encoding="utf-8")
    print(f"\nwrote {DOC.relative_to(common.ROOT)}")


def main(argv: Sequence[str] | None = None) -> int:
    cli = common.parser(__doc__ or "")
    cli.add_argument("--no-docs", action="store_true", help="do not touch docs/performance.md")
    cli.add_argument("--docs-only", action="store_true",
                     help="rewrite the docs from the last results/perf_*.json without running")
    args = cli.parse_args(argv)
    args.work.mkdir(parents=True, exist_ok=True)
    load_before = list(os.getloadavg())
    started = time.perf_counter()
    folder = common.results_dir(args.quick, args.work)
    folder.mkdir(parents=True, exist_ok=True)
    run_file = folder / "perf_run.json"
    if args.docs_only:
        results = {name: json.loads((folder / f"perf_{name}.json").read_text())
                   for name in BENCHMARKS}
        run = json.loads(run_file.read_text())
        quick = run["quick"] or any(r.get("quick") for r in results.values())
        write_doc(generated(results, run["command"], run["load_before"], run["seconds"], quick))
        return 0
    results = run_all(args)
    run = {"command": common.command_line(None if argv is None else [sys.argv[0], *argv]),
           "load_before": load_before, "seconds": time.perf_counter() - started,
           "quick": args.quick}
    run_file.write_text(json.dumps(run, indent=2) + "\n", encoding="utf-8")
    if args.quick and not args.no_docs:
        # A quick run checks that the benchmarks work; its figures never replace the published
        # ones (its results are in the work folder).
        print(f"\nquick run: docs/performance.md left as it is; results in {folder}")
    elif not args.no_docs:
        write_doc(generated(results, run["command"], load_before, run["seconds"], args.quick))
    return 0


if __name__ == "__main__":
    sys.exit(main())
