"""Cold-start time of the pre-commit hooks' commands: `python bench/bench_cli.py [--runs 21]`.

A pre-commit hook starts a fresh `meshc` for every commit, so what counts is
the whole process: interpreter start, imports, parse, check, verify, output.
Runs the installed console script (the one pre-commit's hook environment
gets) on the examples, each command `--runs` times, and prints the median and
the fastest wall time, plus the median CPU time (user + system), which the
machine's other load inflates less. The first rows are the bare interpreter
and the imports every run pays before reading a file (third-party packages,
then the check pipeline), for scale. Commands take turns, so a slow spell of
a shared machine hits every row alike. Target: under 200 ms wall for the
verify hook on the shop example (issue 16).

Bytecode: pip compiles every module when it installs a package, so a
pre-commit hook environment imports from .pyc files. An editable install in
a checkout may have none (PYTHONDONTWRITEBYTECODE, a read-only tree), and
then every run compiles meshpolicy's modules again (about 70 ms here). So
the commands run with a bytecode cache of their own (PYTHONPYCACHEPREFIX in
a temporary folder, filled by one warm-up round), as in a hook environment;
`--no-bytecode` measures without it.

`--compare DIR` adds two rows, taking turns with the rest: the verify hook
on the shop example run by `python -c` from DIR's meshpolicy (another
checkout, e.g. `git worktree add /tmp/old HEAD~3`) and the same from this
one: a before/after on the same machine at the same moments.
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
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TARGET_MS = 200


def meshc() -> list[str]:
    script = Path(sys.executable).with_name("meshc")
    if script.exists():
        return [str(script)]
    found = shutil.which("meshc")
    if found is None:
        sys.exit("meshc is not installed: pip install -e .")
    return [found]


def run_once(cmd: list[str], env: dict[str, str] | None = None, cwd: Path = ROOT) -> tuple[float, float, int]:
    r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    code = subprocess.run(cmd, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env).returncode
    wall = time.perf_counter() - t0
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall * 1000, (r1.ru_utime + r1.ru_stime - r0.ru_utime - r0.ru_stime) * 1000, code


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=21)
    ap.add_argument("--no-bytecode", action="store_true", help="no bytecode cache: compile our modules every run")
    ap.add_argument("--compare", metavar="DIR", help="also run the verify hook from the meshpolicy in DIR")
    args = ap.parse_args()
    exe = meshc()
    py = sys.executable
    rows = [("python -c pass (interpreter start)", [py, "-c", "pass"]),
            ("import lark, click (third-party floor)", [py, "-c", "import lark, click"]),
            ("import meshpolicy.cli, meshpolicy.pipeline (before any file is read)",
             [py, "-c", "import meshpolicy.cli, meshpolicy.pipeline"])]
    for example in ("shop", "bookinfo"):
        files = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "examples" / example).rglob("*.mesh"))
        rows += [
            (f"meshc verify FILES ({example}, as the meshc-verify hook)", exe + ["verify", *files]),
            (f"meshc fmt --check FILES ({example}, as the meshc-fmt hook)", exe + ["fmt", "--check", *files]),
            (f"meshc check examples/{example}", exe + ["check", f"examples/{example}"]),
        ]
    cwds: dict[str, Path] = {}
    if args.compare:
        shop = sorted(str(p) for p in (ROOT / "examples" / "shop").rglob("*.mesh"))
        run_cli = "import sys; from meshpolicy.cli import main; sys.argv[0] = 'meshc'; main()"
        for label, tree in ((f"meshc verify FILES (shop), from {args.compare}", Path(args.compare).resolve()),
                            ("meshc verify FILES (shop), from this checkout", ROOT)):
            rows.append((label, [py, "-c", run_cli, "verify", *shop]))
            cwds[label] = tree  # `python -c` imports from its working directory first
    env = dict(os.environ)
    cache = None
    if not args.no_bytecode:
        cache = tempfile.TemporaryDirectory(prefix="meshc-bench-pyc-")
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env["PYTHONPYCACHEPREFIX"] = cache.name
        for label, cmd in rows:  # the warm-up round writes the bytecode
            run_once(cmd, env, cwds.get(label, ROOT))
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
          f"load average {os.getloadavg()[0]:.1f} at start; {args.runs} runs each, "
          f"{'no bytecode cache' if args.no_bytecode else 'from bytecode'}; "
          f"target < {TARGET_MS} ms wall for the verify hook\n")
    # Round-robin (every command once per round) so that a slow spell of this
    # shared machine hits every row alike.
    walls: list[list[float]] = [[] for _ in rows]
    cpus: list[list[float]] = [[] for _ in rows]
    codes = [0] * len(rows)
    for _ in range(args.runs):
        for i, (label, cmd) in enumerate(rows):
            wall, cpu, codes[i] = run_once(cmd, env, cwds.get(label, ROOT))
            walls[i].append(wall)
            cpus[i].append(cpu)
    print("| command | exit | median wall (ms) | fastest wall (ms) | median CPU (ms) |")
    print("|---|---|---|---|---|")
    for i, (label, _cmd) in enumerate(rows):
        print(f"| {label} | {codes[i]} | {statistics.median(walls[i]):.0f} | {min(walls[i]):.0f} | "
              f"{statistics.median(cpus[i]):.0f} |")
    print(f"\nload average {os.getloadavg()[0]:.1f} at the end")
    if cache is not None:
        cache.cleanup()

if __name__ == "__main__":
    main()
