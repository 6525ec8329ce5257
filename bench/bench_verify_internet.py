"""Reachability from the internet: `python bench/bench_verify_internet.py [N ...] [--routes K] [--seed S]`.

For the bench mesh of N services (bench/gen.py), times the whole `meshc
verify` run (verify.run: partitions, findings, call graph, limits,
assertions) as generated, and again with one ingress added: a JWT provider,
an ingress routing to K services (half with a path rewrite, half without),
`allow internet` rules on them (half needing a token with a claim), a
transitive `assert never internet ~> D` to a data service and an
`assert only internet with jwt role = "admin" -> S /admin/**`. The
difference is what the internet as a caller costs. CPU seconds of this
process (the machine is shared) and wall seconds, each the best of --repeat
cold runs (pattern caches cleared).
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.gen import generate  # noqa: E402
from meshpolicy.pipeline import check_project  # noqa: E402
from meshpolicy.project import from_texts  # noqa: E402


def cold() -> None:
    from meshpolicy.verify import atoms, automata, ingress, partition

    atoms._split_cached.cache_clear()
    automata.witness.cache_clear()
    automata.compile_key.cache_clear()
    partition._CACHE.clear()
    ingress._CACHE.clear()


def with_ingress(texts: dict[str, str], routes: int) -> dict[str, str]:
    """The generated mesh plus one ingress routing to `routes` HTTP services."""
    mesh = check_project(from_texts(texts)).mesh
    # services behind the generated edge (the edge layer denies authenticated callers:
    # it was written for callers from outside, and an ingress has a mesh identity)
    def open_to_ingress(s) -> bool:
        return not any(r.effect == "deny" and not r.paths and not r.methods
                       and any(x.kind in ("authenticated", "any") for x in r.sources)
                       for r in mesh.rules_by_target.get(s.name, []))

    http = [s for s in mesh.services if s.ports and all(p.protocol != "tcp" for p in s.ports)
            and s.namespace != "edge" and open_to_ingress(s)]
    targets = http[:routes]
    data = next(s.name for s in mesh.services if any(p.protocol == "tcp" for p in s.ports))
    lines = ['jwt auth {', '  issuer "https://auth.bench.example/"', '  audience "bench"',
             '  jwks_uri "https://auth.bench.example/jwks.json"', '}', '',
             'ingress public {', '  namespace edge', '  account public-gateway', '  listen 8080 http',
             '  hosts "bench.example.com", "*.bench.example.com"', '  jwt auth']
    rules = []
    for i, s in enumerate(targets):
        if i % 2 == 0:
            lines.append(f'  /{s.name}/** -> {s.name} rewrite "/"')
        else:
            lines.append(f'  GET, POST /api/{s.name}/** -> {s.name}')
        if i % 2 == 0:
            rules.append(f"allow internet -> {s.name} GET")
        else:
            rules.append(f'allow internet with jwt scope has "{s.name}:write" -> {s.name} POST /api/{s.name}/**')
    lines += ['  * -> respond 404 "no such page"', '}', ''] + rules + [
        f"assert never internet ~> {data}",
        f'assert only internet with jwt role = "admin" -> {targets[0].name} /admin/**', '']
    out = dict(texts)
    out["ingress.mesh"] = "\n".join(lines)
    return out


def timed(texts: dict[str, str], repeat: int) -> tuple[float, float, int, int]:
    import meshpolicy.verify as V

    checked = check_project(from_texts(texts))
    assert checked.ok, [d.message for d in checked.diagnostics if d.is_error][:3]
    best = None
    for _ in range(repeat):
        cold()
        mesh = check_project(from_texts(texts)).mesh  # a fresh model: no cached answers
        t0, c0 = time.perf_counter(), time.process_time()
        diags = V.run(mesh, {"verify": {}})
        got = (time.process_time() - c0, time.perf_counter() - t0)
        best = got if best is None or got[0] < best[0] else best
    internet = sum(1 for d in diags if d.code in ("MP540", "MP541", "MP544") or "internet" in d.message)
    return best[0], best[1], len(diags), internet


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("sizes", nargs="*", type=int, default=[1000])
    ap.add_argument("--routes", type=int, default=20)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--repeat", type=int, default=2)
    args = ap.parse_args()
    print(f"machine: {platform.machine()} {os.cpu_count()} cores, python {platform.python_version()}, "
          f"load average {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} {os.getloadavg()[2]:.2f}, "
          f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    cols = ["n", "ingress routes", "verify cpu s", "verify wall s", "+ingress cpu s", "+ingress wall s",
            "extra cpu s", "extra wall s", "findings", "+ingress findings"]
    print("| " + " | ".join(cols) + " |")
    print("|" + "---|" * len(cols))
    for n in args.sizes:
        texts = {k: v for k, v in generate(n, args.seed).items() if k.endswith(".mesh")}
        base = timed(texts, args.repeat)
        more = timed(with_ingress(texts, args.routes), args.repeat)
        row = [n, args.routes, base[0], base[1], more[0], more[1], more[0] - base[0], more[1] - base[1],
               base[2], more[2]]
        print("| " + " | ".join(f"{x:.2f}" if isinstance(x, float) else str(x) for x in row) + " |", flush=True)


if __name__ == "__main__":
    main()
