#!/usr/bin/env python3
"""Run the whole format corpus (``tests/support/corpus.py``) through vigil.

Makes every case (Debian's ffmpeg CLI, PyAV, GStreamer), then checks each one through the
process graph (``vigil run``, batch mode), one archive run over all of them (``vigil process A
B ... --out``), and ``--mode live --loop`` for a bounded time; inputs that cannot be decoded
must exit 2 with one line. Prints a table (case, producer, what, result per check) and ends
with one JSON line: ``{"cases": N, "passed": N, "failed": [...], "skipped": {...}}``.
Exit status 0 when every case that could be made passed, 1 otherwise.

It uses the test corpus under ``tests/``, so it runs as a module from the checkout root:
``.venv/bin/python -m scripts.check_formats [--keep DIR] [-k mkv]``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

from tests.support import corpus


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--keep", type=Path, help="work in this folder and keep it (inputs cached)")
    ap.add_argument("-k", dest="match", default="", help="only cases whose name contains this")
    args = ap.parse_args(argv)
    cases = [c for c in corpus.CASES if args.match in c.name]
    start = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="vigil-formats-") as tmp:
        work = args.keep or Path(tmp)
        outcome, skipped = corpus.run_corpus(
            cases, work, log=lambda s: print(f"check_formats: {s}", flush=True)
        )
    checks = ("make", "reference", "graph", "archive", "live", "exit2")
    print(f"{'case':26} {'producer':8} {'what':40} " + " ".join(f"{c:8}" for c in checks[2:]))
    for case in cases:
        if case.name in skipped:
            print(f"{case.name:26} {case.producer:8} {case.what[:40]:40} skipped: "
                  f"{skipped[case.name]}")
            continue
        got = outcome.problems.get(case.name, {})
        cells = []
        for check in checks[2:]:
            cells.append("-" if check not in got else ("ok" if not got[check] else "FAIL"))
        print(f"{case.name:26} {case.producer:8} {case.what[:40]:40} "
              + " ".join(f"{c:8}" for c in cells))
        for check in checks:
            for problem in got.get(check, []):
                print(f"    {check}: {problem}")
    failed = outcome.failed()
    ran = [c.name for c in cases if c.name not in skipped]
    passed = [n for n in ran if n not in failed]
    print(f"check_formats: {len(passed)}/{len(ran)} passed in {time.monotonic() - start:.0f} s")
    print(json.dumps({"cases": len(ran), "passed": len(passed), "failed": failed,
                      "skipped": skipped}))
    if not ran:  # e.g. no ffmpeg/GStreamer here: a run that checked nothing is no pass
        print("check_formats: no case ran", file=sys.stderr)
        return 1
    return 0 if not failed else 1


if __name__ == "__main__":
    sys.exit(main())
