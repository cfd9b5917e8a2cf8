"""The whole fault suite, timed, and the README's table of what was tried:

    python tests/faults/run.py [--fast] [--no-readme] [PYTEST_ARGS...]

Runs `pytest tests/faults` with every case (FAULTS_FULL=1; `--fast` runs only CI's subset), collects what each
passing case recorded (tests/faults/faultlib.py: fault class, case, outcome, how many) and every failed test, and
writes experiments/results/faults.md and the README section between the fault-table markers. Exits with pytest's
status: a failed case is in the table as FAILED, and the command fails.
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

from style_tailoring.io import atomic_write_text

REPO = Path(__file__).resolve().parents[2]
START, END = "<!-- fault-table:start -->", "<!-- fault-table:end -->"


def table(rows: list[dict]) -> list[str]:
    """Markdown rows: one per (class, case, outcome), cases summed; failed tests last."""
    merged: OrderedDict = OrderedDict()
    failed = sorted({r["failed"] for r in rows if "failed" in r})
    for r in rows:
        if "failed" in r:
            continue
        key = (r["class"], r["case"], r["outcome"], r["lost"])
        merged[key] = merged.get(key, 0) + r["cases"]
    lines = ["| fault or input | case | tried | outcome | data lost |", "|---|---|---|---|---|"]
    for (cls, case, outcome, lost), n in sorted(merged.items(), key=lambda kv: kv[0][0]):
        lines.append(f"| {cls} | {case} | {n} | {outcome} | {lost} |")
    lines += [f"| FAILED | `{nodeid}` | 1 | failed | unknown |" for nodeid in failed]
    return lines


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--fast", action="store_true", help="only the cases CI runs")
    parser.add_argument("--no-readme", action="store_true", help="do not rewrite the README section")
    args, pytest_args = parser.parse_known_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        record = Path(tmp) / "record.jsonl"
        record.touch()
        env = {**os.environ, "FAULTS_RECORD": str(record), "WANDB_MODE": "offline", "REQUIRE_BROWSER": "1",
               **({} if args.fast else {"FAULTS_FULL": "1"})}
        started = time.time()
        proc = subprocess.run([sys.executable, "-m", "pytest", "tests/faults", "-q", "-p", "no:cacheprovider",
                               *pytest_args], cwd=REPO, env=env)
        seconds = time.time() - started
        rows = [json.loads(line) for line in record.read_text().splitlines() if line.strip()]
    command = "python tests/faults/run.py" + (" --fast" if args.fast else "")
    body = [f"`{command}`: {sum(r.get('cases', 0) for r in rows)} cases in "
            f"{len({r.get('test') for r in rows if 'test' in r})} tests, {seconds / 60:.1f} min on this machine "
            f"({os.cpu_count()} CPU cores), pytest exit status {proc.returncode}.", "", *table(rows)]
    out = REPO / "experiments" / "results" / "faults.md"
    atomic_write_text(out, "# Fault suite\n\n" + "\n".join(body) + "\n")
    print("\n".join(body))
    if not args.no_readme and not args.fast:
        readme = REPO / "README.md"
        text = readme.read_text()
        if START in text and END in text:
            head, rest = text.split(START, 1)
            atomic_write_text(readme, head + START + "\n" + "\n".join(body) + "\n" + END + rest.split(END, 1)[1])
    return proc.returncode


if __name__ == "__main__":
    raise SystemExit(main())
