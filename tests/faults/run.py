"""The whole fault suite, timed, and the table of what was tried in docs/reliability.md:

    python tests/faults/run.py [--fast] [--no-docs] [PYTEST_ARGS...]
    python tests/faults/run.py --from-records experiments/results/faults_records.jsonl   # re-render only

Runs `pytest tests/faults` with every case (FAULTS_FULL=1; `--fast` runs only CI's subset), collects what each
passing case recorded (tests/faults/faultlib.py: fault class, case, outcome, how many) and every failed test, prints
the table, and (not with --fast) writes experiments/results/faults_records.jsonl (the run and its records),
experiments/results/faults.md (one row per case) and the section of docs/reliability.md between the fault-table
markers (one row per fault class; `--no-docs`, or its old name `--no-readme`, leaves that page alone). Exits with
pytest's status: a failed case is in the tables as FAILED, and the command fails.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import OrderedDict
from pathlib import Path

from style_tailoring.io import atomic_write_text, write_jsonl

REPO = Path(__file__).resolve().parents[2]
RESULTS = REPO / "experiments" / "results"
DOCS_PAGE = REPO / "docs" / "reliability.md"  # its section between the markers is rewritten
START, END = "<!-- fault-table:start -->", "<!-- fault-table:end -->"


def _failed(rows: list[dict]) -> list[str]:
    return sorted({r["failed"] for r in rows if "failed" in r})


def case_table(rows: list[dict]) -> list[str]:
    """One row per (class, case, outcome), cases summed; failed tests last."""
    merged: OrderedDict = OrderedDict()
    for r in rows:
        if "failed" not in r:
            key = (r["class"], r["case"], r["outcome"], r["lost"])
            merged[key] = merged.get(key, 0) + r["cases"]
    lines = ["| fault or input | case | tried | outcome | data lost |", "|---|---|---|---|---|"]
    for (cls, case, outcome, lost), n in sorted(merged.items(), key=lambda kv: kv[0][0]):
        lines.append(f"| {cls} | {case} | {n} | {outcome} | {lost} |")
    return lines + [f"| FAILED | `{nodeid}` | 1 | failed | unknown |" for nodeid in _failed(rows)]


def class_table(rows: list[dict]) -> list[str]:
    """One row per fault class: how many kinds of case and cases, the outcomes, the data lost."""
    classes: OrderedDict = OrderedDict()
    for r in sorted((r for r in rows if "failed" not in r), key=lambda r: r["class"]):
        c = classes.setdefault(r["class"], {"kinds": set(), "cases": 0, "outcomes": set(), "lost": set()})
        c["kinds"].add(r["case"])
        c["cases"] += r["cases"]
        c["outcomes"].add(r["outcome"])
        c["lost"].add(r["lost"])
    lines = ["| fault or input | kinds of case | cases | outcome | data lost |", "|---|---|---|---|---|"]
    for name, c in classes.items():
        lines.append(f"| {name} | {len(c['kinds'])} | {c['cases']} | {' / '.join(sorted(c['outcomes']))} | "
                     f"{' / '.join(sorted(c['lost']))} |")
    return lines + [f"| FAILED | `{nodeid}` | 1 | failed | unknown |" for nodeid in _failed(rows)]


def render(run: dict, rows: list[dict], docs: bool, write: bool = True) -> None:
    cases = sum(r.get("cases", 0) for r in rows)
    tests = len({r.get("test") for r in rows if "test" in r})
    head = (f"`{run['command']}`: {cases} cases in {tests} tests, {run['seconds'] / 60:.1f} min on {run['cores']} "
            f"CPU cores ({run['date']}), pytest exit status {run['exit']}.")
    body = [head + " Every case: `experiments/results/faults.md`.", "", *class_table(rows)]
    print("\n".join(body))
    if not write:  # a --fast run prints its tables; the committed ones are the whole suite's
        return
    atomic_write_text(RESULTS / "faults.md", "# Fault suite: every case\n\n" + "\n".join([head, "", *case_table(rows)])
                      + "\n")
    if docs:
        path = DOCS_PAGE
        text = path.read_text()
        if START in text and END in text:
            before, rest = text.split(START, 1)
            atomic_write_text(path, before + START + "\n" + "\n".join(body) + "\n" + END + rest.split(END, 1)[1])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--fast", action="store_true", help="only the cases CI runs")
    parser.add_argument("--no-docs", "--no-readme", dest="no_docs", action="store_true",
                        help="do not rewrite the fault table in docs/reliability.md (--no-readme: its old name)")
    parser.add_argument("--from-records", type=Path, help="re-render the tables from a records file, run nothing")
    args, pytest_args = parser.parse_known_args(argv)
    if args.from_records:
        run, *rows = [json.loads(line) for line in args.from_records.read_text().splitlines() if line.strip()]
        render(run, rows, docs=not args.no_docs)
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        record = Path(tmp) / "record.jsonl"
        record.touch()
        env = {**os.environ, "FAULTS_RECORD": str(record), "WANDB_MODE": "offline", "REQUIRE_BROWSER": "1",
               **({} if args.fast else {"FAULTS_FULL": "1"})}
        started = time.time()
        proc = subprocess.run([sys.executable, "-m", "pytest", "tests/faults", "-q", "-p", "no:cacheprovider",
                               *pytest_args], cwd=REPO, env=env)
        rows = [json.loads(line) for line in record.read_text().splitlines() if line.strip()]
    run = {"command": "python tests/faults/run.py" + (" --fast" if args.fast else ""), "exit": proc.returncode,
           "seconds": round(time.time() - started), "cores": os.cpu_count(), "date": time.strftime("%Y-%m-%d")}
    if not args.fast:
        write_jsonl(RESULTS / "faults_records.jsonl", [run, *rows])
    render(run, rows, docs=not args.no_docs, write=not args.fast)
    return proc.returncode


if __name__ == "__main__":
    raise SystemExit(main())
