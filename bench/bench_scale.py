"""`meshc check`, `meshc verify` and `meshc compile` (every target) at 1,000 /
5,000 / 10,000 services: `python bench/bench_scale.py [--sizes 1000 5000 10000]
[--mesh gen|powerlaw] [--no-verify] [--no-compile]`.

Each figure is one run of the real command line in a fresh process, so it
includes start-up and reading the files, as a user meets it: CPU seconds
(the command and the workers it forks), wall seconds, and peak RSS (the
largest of the command and its workers, from wait4). Compile writes to a
temporary directory; meshproxy gets `http1_apps` listing every service (as
`meshc up` does), else it refuses the mesh's http2/grpc ports. gateway-api
and linkerd refuse constructs of the bench mesh they cannot express (MP701,
exit 1): their figures are lowering up to the refusal. The last row of each size
is every target in one command (`--target istio,envoy,...`), which reads,
checks and plans the mesh once and lowers the targets side by side (it
exits 1 and writes nothing while gateway-api and linkerd refuse the mesh,
after lowering every target). Growth is CPU per service at the largest size over
CPU per service at the smallest (1.00 = linear; the issue asks for <= 1.5).
The machine is shared: CPU seconds are the figure to compare, wall time
mostly measures the neighbours; the load average is printed with each row.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.gen import generate, write  # noqa: E402

SIZES = (1000, 5000, 10000)
TARGETS = ("istio", "envoy", "meshproxy", "gateway-api", "linkerd")
LIMITS = {"check": 5.0, "verify": 10.0, "compile": 60.0}  # seconds: check, verify CPU; compile of every target wall (issue 16)
RSS_LIMIT_MB = 2048


def run(args: list[str]) -> tuple[int, float, float, float]:
    """(exit code, CPU s, wall s, peak RSS MiB) of `meshc ARGS` in a fresh process."""
    w0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "meshpolicy.cli", *args], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - w0
    err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
    proc.stderr.close()
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode not in (0, 1):
        raise SystemExit(f"meshc {' '.join(args)} exited {proc.returncode}: {err[-2000:]}")
    # wait4 counts the child and every descendant it waited for (the forked
    # validation workers); ru_maxrss is the largest of them, in KiB on Linux.
    return proc.returncode, usage.ru_utime + usage.ru_stime, wall, usage.ru_maxrss / 1024


def mesh_files(n: int, kind: str, seed: int) -> dict[str, str]:
    if kind == "gen":
        return generate(n, seed)
    from bench.gen_powerlaw import generate as powerlaw

    return powerlaw(n, seed)


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=list(SIZES))
    ap.add_argument("--mesh", choices=("gen", "powerlaw"), default="gen")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--targets", nargs="+", default=list(TARGETS), choices=TARGETS)
    ap.add_argument("--no-compile", action="store_true", help="time `meshc check` (and verify) only")
    ap.add_argument("--no-verify", action="store_true", help="leave out `meshc verify`")
    ap.add_argument("--together", choices=("both", "only", "no"), default="both",
                    help="also time every target in one command (`--target istio,envoy,...`: one read, check "
                         "and plan, targets lowered side by side), only that, or not")
    args = ap.parse_args(argv)
    print(f"Python {platform.python_version()}, {os.cpu_count()} CPUs, {args.mesh} mesh, seed {args.seed}; "
          "one run each of the real command line (start-up included)")
    print()
    print("| services | command | exit | CPU (s) | wall (s) | peak RSS (MiB) | CPU ms / service | load avg |")
    print("|---:|---|---:|---:|---:|---:|---:|---:|")
    per_service: dict[str, dict[int, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for n in args.sizes:
            files = mesh_files(n, args.mesh, args.seed)
            root = write(files, Path(tmp) / f"mesh{n}")
            # meshproxy speaks HTTP/1.1 only: say every app does too (as `meshc up`'s echo apps), so it
            # compiles the mesh instead of refusing its http2/grpc ports
            names = sorted(set(re.findall(r"^service ([\w.-]+)", "\n".join(files.values()), re.M)))
            with (root / "meshc.toml").open("a", encoding="utf-8") as fh:
                fh.write(f"\n[compile.meshproxy]\nhttp1_apps = {json.dumps(names)}\n")
            steps = [("check", ["check", str(root), "--format", "json"])]
            if not args.no_verify:  # check, then the verifier (one command, as the hook and CI run it)
                steps.append(("verify", ["verify", str(root), "--format", "json"]))
            if not args.no_compile and args.together != "only":
                steps += [(f"compile {t}", ["compile", str(root), "--target", t, "-o", str(Path(tmp) / f"out-{t}")])
                          for t in args.targets]
            if not args.no_compile and args.together != "no":
                steps.append(("compile, every target, one command",
                              ["compile", str(root), "--target", ",".join(args.targets), "-o", str(Path(tmp) / "out-all")]))
            total_cpu = total_wall = peak = 0.0
            for label, cmd in steps:
                code, cpu, wall, rss = run(cmd)
                load = os.getloadavg()[0]
                per_service.setdefault(label, {})[n] = cpu / n
                if label.startswith("compile ") and "one command" not in label:
                    total_cpu, total_wall, peak = total_cpu + cpu, total_wall + wall, max(peak, rss)
                print(f"| {n} | {label} | {code} | {cpu:.2f} | {wall:.2f} | {rss:.0f} | {1000 * cpu / n:.3f} "
                      f"| {load:.1f} |", flush=True)
            if not args.no_compile and args.together != "only":
                per_service.setdefault("compile, every target", {})[n] = total_cpu / n
                print(f"| {n} | compile, every target (sum of the rows) | | {total_cpu:.2f} | {total_wall:.2f} | {peak:.0f} "
                      f"| {1000 * total_cpu / n:.3f} | |", flush=True)
    print()
    lo, hi = min(args.sizes), max(args.sizes)
    if lo != hi:
        for label, rows in per_service.items():
            print(f"growth, {label}: CPU per service at {hi} is {rows[hi] / rows[lo]:.2f}x that at {lo}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
