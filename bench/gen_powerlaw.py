"""Power-law meshes: `python bench/gen_powerlaw.py N OUTDIR [--seed S]`.

bench/gen.py draws a layered graph with mild hubs. Real meshes also have
the other shape: a handful of shared services (auth, config, a gateway's
backends) called by hundreds of services, and a long tail called by one to
three. Here callee popularity follows a Zipf law (the k-th most popular
service is picked with weight 1/k^1.2), so at 5000 services the top few have
hundreds to thousands of callers and most have a few. About 10% of HTTP
services carry 2-4 versions with a weighted route split and a header match;
every call edge gets an allow rule with a method list and a path glob, a
third of the hubs get a deny carve-out for `/admin/**`, and some edges are
rate limited. Namespaces group 25 services; accounts are the service names.

Deterministic: the same (n, seed) gives byte-identical files. Importable:
`generate(n, seed) -> {relative path: text}` (includes `meshc.toml`).
"""

from __future__ import annotations

import bisect
import itertools
import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.gen import write  # noqa: E402

VERBS = ("get", "list", "put", "sync", "scan", "read", "write", "push", "pull", "find")


def _callee_count(rng: random.Random) -> int:
    """Heavy-tailed out-degree: most call 1-4 services, a few call dozens."""
    return min(60, max(1, int(rng.paretovariate(1.6))))


def generate(n: int, seed: int = 1) -> dict[str, str]:
    if n < 3:
        raise ValueError("n must be at least 3")
    rng = random.Random(seed)
    names = [f"s{i:05d}" for i in range(n)]
    popularity = list(range(n))
    rng.shuffle(popularity)  # popularity rank of each service, unrelated to its name
    by_rank = sorted(range(n), key=lambda i: popularity[i])
    weights = [1.0 / (k + 1) ** 1.2 for k in range(n)]
    cum = list(itertools.accumulate(weights))
    versions = {i: rng.randint(2, 4) if rng.random() < 0.10 else 1 for i in range(n)}
    edges: dict[int, list[int]] = {}
    for a in range(n):
        want = _callee_count(rng)
        got: dict[int, None] = {}
        for _ in range(want * 3):
            if len(got) >= want:
                break
            b = by_rank[bisect.bisect_left(cum, rng.random() * cum[-1])]
            if b != a:
                got[b] = None
        edges[a] = list(got)
    callers: dict[int, list[int]] = {i: [] for i in range(n)}
    for a, bs in edges.items():
        for b in bs:
            callers[b].append(a)
    hubs = {b for b in range(n) if len(callers[b]) >= 50}
    out = ['mesh powerlaw { trust_domain "powerlaw.example"; mtls strict; default deny }', ""]
    for i, name in enumerate(names):
        ns = f"ns{i // 25:04d}"
        body = [f"namespace {ns}", f"account {name}", "port 8080 http", "timeout 2s",
                "retry 1 per_try 800ms on connect-failure"]
        out.append(f"service {name} {{ " + "; ".join(body) + " }")
        if versions[i] > 1:
            vs = [f"v{k + 1}" for k in range(versions[i])]
            out[-1] = out[-1][:-2] + "; " + " ".join(f'version {v} {{ version: "{v}" }}' for v in vs) + " }"
            share = 100 // len(vs)
            split = ", ".join(f"{v} {share + (100 - share * len(vs) if k == 0 else 0)}%" for k, v in enumerate(vs))
            out.append(f"route {name} {{")
            out.append(f'  header "x-canary" = "on" GET -> {vs[-1]}')
            out.append(f"  GET /{rng.choice(VERBS)}/** -> {split}")
            out.append(f"  * -> {vs[0]}")
            out.append("}")
    out.append("")
    for b in range(n):
        for a in callers[b]:
            verb = rng.choice(VERBS)
            methods = "GET" if rng.random() < 0.6 else "GET, POST"
            out.append(f"allow {names[a]} -> {names[b]} {methods} /{verb}/**, /{verb}")
        if b in hubs and rng.random() < 0.33:
            out.append(f"deny * -> {names[b]} /admin/**")
        for a in callers[b][:2]:
            if rng.random() < 0.05:
                out.append(f"limit {names[a]} -> {names[b]} {rng.choice((50, 100, 500))}/s")
    return {"meshc.toml": "[verify]\n", "mesh.mesh": "\n".join(out) + "\n"}


def stats(files: dict[str, str]) -> dict:
    """Callers per service (for the README and the benchmark's header)."""
    counts: dict[str, int] = {}
    for line in files["mesh.mesh"].splitlines():
        if line.startswith("allow "):
            dest = line.split("->")[1].split()[0]
            counts[dest] = counts.get(dest, 0) + 1
    xs = sorted(counts.values(), reverse=True)
    return {"services_called": len(xs), "max_callers": xs[0] if xs else 0,
            "median_callers": xs[len(xs) // 2] if xs else 0, "allow_rules": sum(xs)}


def main(argv: list[str]) -> int:
    import argparse

    ap = argparse.ArgumentParser(description="Write a power-law mesh of N services to OUTDIR.")
    ap.add_argument("n", type=int)
    ap.add_argument("outdir")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args(argv)
    files = generate(args.n, args.seed)
    write(files, args.outdir)
    print(stats(files))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
