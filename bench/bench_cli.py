"""Cold-start time of the pre-commit hooks' commands: `python bench/bench_cli.py [--runs 21]`.

A pre-commit hook starts a fresh `meshc` for every commit, so what counts is
the whole process: interpreter start, imports, parse, check, verify, output.
Runs the installed console script (the one pre-commit's hook environment
gets) on the examples, each command `--runs` times, and prints the median and
the fastest wall time, plus the median CPU time (user + system), which the
machine's other load inflates less. The first row is the bare interpreter,
for scale. Target: under 500 ms wall per hook run (issue 5).
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TARGET_MS = 500


def meshc() -> list[str]:
    script = Path(sys.executable).with_name("meshc")
    if script.exists():
        return [str(script)]
    found = shutil.which("meshc")
    if found is None:
        sys.exit("meshc is not installed: pip install -e .")
    return [found]


def measure(cmd: list[str], runs: int) -> tuple[float, float, float, int]:
    walls, cpus, code = [], [], 0
    for _ in range(runs):
        r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.perf_counter()
        code = subprocess.run(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode
        walls.append(time.perf_counter() - t0)
        r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpus.append(r1.ru_utime + r1.ru_stime - r0.ru_utime - r0.ru_stime)
    ms = 1000
    return statistics.median(walls) * ms, min(walls) * ms, statistics.median(cpus) * ms, code


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=21)
    args = ap.parse_args()
    exe = meshc()
    rows = [("python -c pass (interpreter start)", [sys.executable, "-c", "pass"])]
    for example in ("shop", "bookinfo"):
        files = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "examples" / example).rglob("*.mesh"))
        rows += [
            (f"meshc verify FILES ({example}, as the meshc-verify hook)", exe + ["verify", *files]),
            (f"meshc fmt --check FILES ({example}, as the meshc-fmt hook)", exe + ["fmt", "--check", *files]),
            (f"meshc check examples/{example}", exe + ["check", f"examples/{example}"]),
        ]
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}; "
          f"{args.runs} runs each; target < {TARGET_MS} ms wall per hook run\n")
    print("| command | exit | median wall (ms) | fastest wall (ms) | median CPU (ms) |")
    print("|---|---|---|---|---|")
    for label, cmd in rows:
        med, fast, cpu, code = measure(cmd, args.runs)
        print(f"| {label} | {code} | {med:.0f} | {fast:.0f} | {cpu:.0f} |")


if __name__ == "__main__":
    main()
