"""Certifier benchmark: `python bench/bench_certify.py [N ...] [--seed S] [--examples]`.

Times `meshc verify` (verify.run) and the certifier that `--certify` adds
(verify.certify.certify, call-graph rebuild included) on generated meshes of
N services (bench/gen.py) and, with --examples, on examples/shop and
examples/bookinfo. CPU seconds of this process and wall seconds; the
certifier's Z3 questions, its slowest destination, and the MP590/MP591 it
reported (both should be 0).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.gen import generate  # noqa: E402
from meshpolicy.pipeline import check_project  # noqa: E402
from meshpolicy.project import from_texts, load  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def timed(fn):
    t0, c0 = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.process_time() - c0, time.perf_counter() - t0


def bench(name: str, project) -> dict:
    from meshpolicy.verify import run
    from meshpolicy.verify.certify import certify

    checked = check_project(project)
    mesh = checked.mesh
    found, v_cpu, v_wall = timed(lambda: run(mesh, {"verify": {}}))
    stats: dict = {}
    out, c_cpu, c_wall = timed(lambda: certify(mesh, found, {"verify": {}}, stats=stats))
    return {"mesh": name, "services": len(mesh.service_map), "findings": len(found),
            "verify_cpu_s": v_cpu, "verify_wall_s": v_wall, "certify_cpu_s": c_cpu, "certify_wall_s": c_wall,
            "ratio_cpu": c_cpu / v_cpu if v_cpu else float("inf"), "z3_questions": stats["certify_queries"],
            "mp590": sum(d.code == "MP590" for d in out), "mp591": sum(d.code == "MP591" for d in out)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("sizes", nargs="*", type=int, default=[10, 100, 1000])
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--examples", action="store_true", help="also the shop and bookinfo examples")
    args = ap.parse_args()
    cols = ["mesh", "services", "findings", "verify_cpu_s", "verify_wall_s", "certify_cpu_s", "certify_wall_s",
            "ratio_cpu", "z3_questions", "mp590", "mp591"]
    print(f"load average: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print("| " + " | ".join(cols) + " |")
    print("|" + "---|" * len(cols))
    runs = [(p.name, lambda p=p: load([p])) for p in (ROOT / "examples" / "shop", ROOT / "examples" / "bookinfo")
            if args.examples]
    runs += [(f"gen {n}", lambda n=n: from_texts({k: v for k, v in generate(n, args.seed).items()
                                                  if k.endswith(".mesh")})) for n in args.sizes]
    for name, project in runs:
        row = bench(name, project())
        print("| " + " | ".join(f"{row[c]:.2f}" if isinstance(row[c], float) else str(row[c]) for c in cols) + " |",
              flush=True)


if __name__ == "__main__":
    main()
