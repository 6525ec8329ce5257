"""Synthetic meshes for the benchmarks: `python bench/gen.py N OUTDIR [--seed S]`.

The shape follows what real meshes look like rather than a uniform random
graph: services sit in layers (edge -> api -> domain -> data), callees are
picked by preferential attachment so a few hubs collect many callers, and
calls go down the layers (or to an earlier service of the same layer), so
the graph is acyclic except for a few deliberate callback edges (one per
250 services). Around 20% of HTTP services run a canary with a weighted
split and header matches; most have timeouts, retries that fit in them and
outlier detection; every call edge gets allow rules with methods and path
globs, many get a deny carve-out; some edges are rate limited; a few
assertions that hold are written from the generated graph.

Deterministic: the same (n, seed) gives byte-identical files. Importable:
`generate(n, seed) -> {relative path: text}` (includes `meshc.toml`) and
`write(files, outdir)`.
"""

from __future__ import annotations

import math
import random
import sys
from dataclasses import dataclass, field
from pathlib import Path

LAYERS = ("edge", "api", "domain", "data")
SHARE = {"edge": 0.03, "api": 0.20, "domain": 0.45}  # data takes the rest
NOUNS = (
    "cart", "orders", "pricing", "catalog", "search", "users", "accounts", "payments", "ledger",
    "invoices", "shipping", "inventory", "reviews", "ratings", "promotions", "coupons", "recs",
    "notify", "email", "sms", "auth", "sessions", "profiles", "media", "images", "billing", "tax",
    "fraud", "risk", "audit", "reports", "analytics", "events", "feeds", "messages", "chat", "geo",
    "stores", "warehouse", "returns", "loyalty", "wishlist", "checkout", "quotes", "contracts",
)
SIDECAR_MS, SIDECARS_PER_HOP = 3, 2
TCP_PORTS = {"db": 5432, "cache": 6379}


@dataclass
class Svc:
    index: int
    name: str
    layer: str
    team: str
    noun: str
    protocol: str
    port: int
    canary: bool = False
    timeout_ms: int | None = None
    retries: int = 0  # 0: no retry line, -1: `retry off`
    per_try_ms: int = 0
    lines: list[str] = field(default_factory=list)
    route: list[str] = field(default_factory=list)
    # worst case of this service's settings and its route rules' overrides
    max_attempts: int = 1
    max_timeout_ms: int | None = None
    fault_ms: int = 0
    callers: list[str] = field(default_factory=list)
    callees: list[str] = field(default_factory=list)

    @property
    def grpc(self) -> bool:
        return self.protocol == "grpc"

    @property
    def tcp(self) -> bool:
        return self.protocol == "tcp"

    def read_paths(self) -> str:
        if self.grpc:
            return f"/{self.noun}.v1.{self.noun.title()}Service/*"
        return f"/v1/{self.noun}, /v1/{self.noun}/**"

    def sample_path(self) -> tuple[str, str]:
        """A (method, path) that the read allow rule admits and no deny carves out."""
        if self.grpc:
            return "POST", f"/{self.noun}.v1.{self.noun.title()}Service/Get"
        return "GET", f"/v1/{self.noun}/42"


def _round_up(ms: int, step: int) -> int:
    return -(-ms // step) * step


def _dur(ms: int) -> str:
    if ms % 3_600_000 == 0:
        return f"{ms // 3_600_000}h"
    if ms % 60_000 == 0:
        return f"{ms // 60_000}m"
    if ms % 1000 == 0:
        return f"{ms // 1000}s"
    return f"{ms}ms"


class _Gen:
    def __init__(self, n: int, seed: int):
        if n < 4:
            raise ValueError("a generated mesh needs at least 4 services (one per layer)")
        self.n = n
        self.rng = random.Random(seed)
        self.svcs: list[Svc] = []
        self.by_name: dict[str, Svc] = {}
        self.layer: dict[str, list[Svc]] = {k: [] for k in LAYERS}
        self.edges: list[tuple[str, str]] = []
        self.edge_set: set[tuple[str, str]] = set()
        self.callbacks: set[tuple[str, str]] = set()
        n_teams = max(2, n // 20)
        self.teams = [f"team-{NOUNS[i % len(NOUNS)]}{i // len(NOUNS) or ''}" for i in range(n_teams)]
        self.rules: dict[str, list[str]] = {}  # target name -> auth rule lines
        self.limits: dict[str, list[str]] = {}
        # (sources, target) -> for "only" assertions
        self.allow_sources: dict[str, list[str]] = {}
        self.write_sources: dict[str, list[str]] = {}

    # ---- services ---------------------------------------------------------
    def make_services(self) -> None:
        rng = self.rng
        counts = {k: max(1, round(self.n * SHARE[k])) for k in ("edge", "api", "domain")}
        counts["data"] = self.n - sum(counts.values())
        while counts["data"] < 1:  # tiny meshes
            big = max(("api", "domain"), key=counts.get)
            counts[big] -= 1
            counts["data"] += 1
        i = 0
        for layer in LAYERS:
            for _ in range(counts[layer]):
                team = "edge" if layer == "edge" else rng.choice(self.teams)
                noun = "gateway" if layer == "edge" else team.removeprefix("team-").rstrip("0123456789")
                protocol, prefix = self._protocol(layer)
                port = {"http": 8080, "http2": 8443, "grpc": 9090}.get(protocol) or TCP_PORTS[prefix]
                s = Svc(i, f"{prefix}-{noun}-{i}", layer, team, noun, protocol, port)
                self.svcs.append(s)
                self.by_name[s.name] = s
                self.layer[layer].append(s)
                i += 1

    def _protocol(self, layer: str) -> tuple[str, str]:
        r = self.rng.random()
        if layer == "edge":
            return ("http2" if r < 0.5 else "http"), "gw"
        if layer == "api":
            return ("http" if r < 0.8 else "grpc" if r < 0.9 else "http2"), "api"
        if layer == "domain":
            return ("http" if r < 0.6 else "grpc" if r < 0.9 else "http2"), "svc"
        if r < 0.6:
            return "tcp", ("db" if r < 0.4 else "cache")
        return "http", "store"

    # ---- call graph -------------------------------------------------------
    def make_graph(self) -> None:
        rng = self.rng
        # preferential attachment: a service is drawn in proportion to 1 + its callers
        pools = {k: [s.name for s in self.layer[k]] for k in LAYERS}
        below = {"edge": ("api", "domain"), "api": ("domain", "api", "data"), "domain": ("data", "domain")}
        below_w = {"edge": (9, 1), "api": (8, 1, 1), "domain": (6, 4)}
        degrees = {"edge": ([3, 5, 8, 12, 20], [30, 30, 20, 12, 8]),
                   "api": ([1, 2, 3, 4, 6, 10], [20, 30, 22, 14, 9, 5]),
                   "domain": ([1, 2, 3, 4, 6], [35, 30, 18, 11, 6])}
        for s in self.svcs:
            if s.layer == "data":
                continue
            if s.tcp:
                continue
            want = rng.choices(*degrees[s.layer])[0]
            for _ in range(want):
                for _attempt in range(8):
                    tl = rng.choices(below[s.layer], below_w[s.layer])[0]
                    callee = self.by_name[rng.choice(pools[tl])]
                    # same-layer calls only go to earlier services: no cycles
                    if callee.layer == s.layer and callee.index >= s.index:
                        continue
                    if self._add_edge(s, callee):
                        pools[tl].append(callee.name)
                        break
        above = {"api": "edge", "domain": "api", "data": "domain"}
        for s in self.svcs:
            if s.layer != "edge" and not s.callers:
                self._add_edge(rng.choice(self.layer[above[s.layer]]), s)
        # a few callbacks up the layers (webhooks), which close cycles
        for _ in range(self.n // 250):
            caller = rng.choice(self.layer["domain"])
            callee = rng.choice(self.layer["api"])
            if self._add_edge(caller, callee):
                self.callbacks.add((caller.name, callee.name))

    def _add_edge(self, a: Svc, b: Svc) -> bool:
        if a is b or (a.name, b.name) in self.edge_set:
            return False
        self.edge_set.add((a.name, b.name))
        self.edges.append((a.name, b.name))
        a.callees.append(b.name)
        b.callers.append(a.name)
        return True

    # ---- per-service settings ---------------------------------------------
    def settle(self, s: Svc) -> None:
        rng = self.rng
        writes = s.layer == "edge" or s.name in self.write_sources
        out = s.lines
        account = s.name if rng.random() < 0.7 else f"{s.name}-sa"
        out.append(f"namespace {s.team}; account {account}")
        out.append(f"port {s.port} {s.protocol}")
        if s.layer == "edge":
            out.append("mtls permissive")
        elif s.tcp and rng.random() < 0.3:
            out.append("mtls strict")
        if s.tcp:
            if rng.random() < 0.6:
                out.append(f"circuit max_connections {rng.choice([100, 200, 500, 1000])}")
            if rng.random() < 0.2:
                out.append("balance hash source_ip")
            return
        s.canary = s.layer != "edge" and rng.random() < 0.2
        out.append('version v1 { version: "v1" }')
        if s.canary:
            out.append('version v2 { version: "v2", track: "canary" }')
        # Callees are settled first (see files()), so a caller can wait longer
        # than any callee does: no timeout inversions except on callbacks.
        callee_ms = max((self.by_name[c].timeout_ms or 0 for c in s.callees if (s.name, c) not in self.callbacks),
                        default=0)
        base = {"edge": 15_000, "api": 5_000, "domain": 2_000, "data": 1_000}[s.layer] * rng.choice([0.5, 1, 1, 2])
        s.timeout_ms = _round_up(max(int(base), callee_ms + 500), 100)
        out.append(f"timeout {_dur(s.timeout_ms)}")
        r = rng.random()
        if r < 0.75:
            s.retries = rng.choice([1, 2, 2, 3])
            conds = "unavailable, cancelled, resource-exhausted" if s.grpc else "5xx, reset, connect-failure"
            line = f"retry {s.retries}"
            # each attempt must outlast the callees' timeouts and all attempts fit in ours;
            # where they cannot, attempts are bounded by the whole timeout only
            per_try = _round_up(callee_ms + 100, 50) if callee_ms else s.timeout_ms // (s.retries + 1) // 50 * 50
            if (s.retries + 1) * per_try <= s.timeout_ms:
                s.per_try_ms = per_try
                line += f" per_try {_dur(per_try)}"
            line += f" on {conds}"
            if rng.random() < 0.5:
                line += " backoff 25ms max 250ms"
            if rng.random() < 0.3:
                line += f" budget {rng.choice([10, 20, 25])}% min {rng.choice([3, 5])}"
            # writes may reach it (a write allow, or a route rule open to every
            # method inherits this retry): say that repeating them is safe
            if s.grpc or writes or s.canary:
                line += " non_idempotent"
            out.append(line)
        elif r < 0.8:
            s.retries = -1
            out.append("retry off")
        if rng.random() < 0.4:
            out.append(f"circuit max_connections {rng.choice([100, 500, 1000])} "
                       f"max_pending {rng.choice([50, 100])} max_requests {rng.choice([500, 2000])}")
        if rng.random() < 0.7:
            out.append(f"outlier consecutive_5xx {rng.choice([3, 5, 7])} interval {rng.choice([5, 10])}s "
                       f"eject 30s max {rng.choice([20, 50])}%")
        b = rng.random()
        if b < 0.2:
            out.append("balance least_request")
        elif b < 0.25:
            out.append('balance hash header "x-user-id"')
        elif b < 0.28:
            out.append("balance round_robin")
        if s.retries <= 0 and s.layer != "edge" and rng.random() < 0.05:
            s.fault_ms = 50
            out.append(f"fault delay {s.fault_ms}ms 0.5%")
        s.max_attempts = max(1, s.retries + 1)
        s.max_timeout_ms = s.timeout_ms
        if s.canary:
            self.canary_route(s)

    def canary_route(self, s: Svc) -> None:
        rng = self.rng
        stable, canary = rng.choice([(95, 5), (90, 10), (80, 20), (50, 50)])
        split = f"v1 {stable}%, v2 {canary}%"
        rules = s.route
        rules.append('header "x-canary" = "always" -> v2')
        if rng.random() < 0.3:
            rules.append('header "x-user-id" ~ "^[0-9]*7$" -> v2')
        if not s.grpc and rng.random() < 0.2:
            rules.append(f'GET prefix "/v1/{s.noun}/beta/" -> v2')
        if len(s.callers) > 2 and rng.random() < 0.5:  # some callers try the canary first
            who = ", ".join(s.callers[:2])
            method, _ = s.sample_path()
            rules.append(f"from {who} {method} {s.read_paths().split(', ')[-1]} -> {split}")
        if s.name in self.write_sources and rng.random() < 0.6:  # writes stay on stable, never retried
            rules.append(f"POST, PUT, PATCH /v1/{s.noun}/* -> v1 timeout {_dur(s.timeout_ms)} retry off")
        if rng.random() < 0.2:  # a dark launch: v2 sees a copy of the traffic only
            rules.append("* -> v1 mirror v2 5%")
        else:
            rules.append(f"* -> {split}")

    # ---- authorization ----------------------------------------------------
    def authorize(self) -> None:
        rng = self.rng
        for s in self.layer["edge"]:
            self.rules.setdefault(s.name, []).extend(
                # open to outside callers (no mesh identity), not to the mesh's own services
                [f"allow * -> {s.name}", f"deny authenticated -> {s.name}",
                 f"deny * -> {s.name} /admin/**, /internal/**"])
            self.allow_sources.setdefault(s.name, []).append("*")
            # No rate limit on gateways: their callers are outside the mesh, which
            # Istio's sidecar-side limits cannot express (MP701); limits sit on edges below.
        edge_ns = "edge"
        for a_name, b_name in self.edges:
            b = self.by_name[b_name]
            out = self.rules.setdefault(b_name, [])
            self.allow_sources.setdefault(b_name, []).append(a_name)
            if b.tcp:
                out.append(f"allow {a_name} -> {b_name}")
                continue
            if b.grpc:
                out.append(f"allow {a_name} -> {b_name} POST {b.read_paths()}")
                if rng.random() < 0.4:
                    out.append(f"deny {a_name} -> {b_name} POST /{b.noun}.v1.{b.noun.title()}Service/Delete")
                continue
            out.append(f"allow {a_name} -> {b_name} GET, HEAD {b.read_paths()}")
            if rng.random() < 0.5:
                out.append(f"allow {a_name} -> {b_name} POST, PUT, PATCH /v1/{b.noun}/*")
                self.write_sources.setdefault(b_name, []).append(a_name)
            if rng.random() < 0.4:
                out.append(f"deny {a_name} -> {b_name} GET /v1/{b.noun}/*/internal")
            if rng.random() < 0.1:
                self.limits.setdefault(b_name, []).append(
                    f"limit {a_name} -> {b_name} {rng.choice([50, 100, 200])}/s burst {rng.choice([10, 20, 50])}")
        for s in self.layer["data"]:
            if s.tcp:
                self.rules.setdefault(s.name, []).append(f"deny namespace {edge_ns} -> {s.name}")

    # ---- assertions -------------------------------------------------------
    def assertions(self) -> list[str]:
        rng = self.rng
        out: list[str] = []
        k = max(1, self.n // 200)
        edge, data = self.layer["edge"], self.layer["data"]
        for _ in range(k):
            e, d = rng.choice(edge), rng.choice(data)
            if (e.name, d.name) not in self.edge_set:  # edge services never call data directly
                out.append(f"assert never {e.name} -> {d.name}")
        targets = [s for s in self.svcs if s.layer != "edge" and not any(
            src == "*" for src in self.allow_sources.get(s.name, []))]
        for s in rng.sample(targets, min(k, len(targets))):
            out.append(f"assert only {', '.join(dict.fromkeys(self.allow_sources[s.name]))} -> {s.name}")
        writers = sorted(self.write_sources)
        for name in rng.sample(writers, min(k, len(writers))):
            callers = ", ".join(dict.fromkeys(self.write_sources[name]))
            out.append(f"assert only {callers} -> {name} POST /v1/{self.by_name[name].noun}/*")
        for a, b in rng.sample(self.edges, min(k, len(self.edges))):
            callee = self.by_name[b]
            if callee.tcp:
                out.append(f"assert can {a} -> {b}")
            else:
                method, path = callee.sample_path()
                out.append(f"assert can {a} -> {b} {method} {path}")
        for e in rng.sample(edge, min(k, len(edge))):
            by_callers = sorted(data, key=lambda s: -len(s.callers))
            amp = next(((d, w) for d in by_callers if (w := self.worst_path(e.name, d.name))), None)
            if amp is not None:
                out.append(f"assert amplification {e.name} ~> {amp[0].name} <= {amp[1][0]}")
            # latency needs a timeout on every hop, so not to a tcp store
            lat = next(((d, w) for d in by_callers if not d.tcp and (w := self.worst_path(e.name, d.name))
                        and w[1] is not None), None)
            if lat is not None:
                out.append(f"assert latency {e.name} ~> {lat[0].name} <= {math.ceil(lat[1][1] / 1000)}s")
        return out

    def worst_path(self, src: str, dst: str) -> tuple[int, int | None] | None:
        """Worst (attempt product, latency bound in ms) over all paths from src
        to dst; None when dst is unreachable or a cycle lies on a path."""
        reaches = {dst}
        stack = [dst]
        while stack:
            for c in self.by_name[stack.pop()].callers:
                if c not in reaches:
                    reaches.add(c)
                    stack.append(c)
        if src not in reaches:
            return None
        memo: dict[str, tuple[int, int | None]] = {}
        onpath: set[str] = set()

        def go(u: str):
            if u == dst:
                return (1, 0)
            if u in memo:
                return memo[u]
            if u in onpath:
                raise _Cycle
            onpath.add(u)
            best_amp, best_lat = 0, 0
            for v in self.by_name[u].callees:
                if v not in reaches:
                    continue
                amp, lat = go(v)
                hop = self.by_name[v]
                best_amp = max(best_amp, amp * hop.max_attempts)
                if best_lat is not None:
                    if lat is None or hop.max_timeout_ms is None:
                        best_lat = None
                    else:
                        best_lat = max(best_lat, lat + hop.max_timeout_ms + hop.fault_ms + SIDECAR_MS * SIDECARS_PER_HOP)
            onpath.discard(u)
            memo[u] = (best_amp, best_lat)
            return memo[u]

        try:
            return go(src)
        except _Cycle:
            return None

    # ---- output -------------------------------------------------------------
    def files(self) -> dict[str, str]:
        self.make_services()
        self.make_graph()
        self.authorize()  # before settle: retries on services that take writes say non_idempotent
        rank = {k: i for i, k in enumerate(LAYERS)}
        for s in sorted(self.svcs, key=lambda s: (-rank[s.layer], s.index)):  # callees before callers
            self.settle(s)
        files: dict[str, str] = {
            "meshc.toml": (
                "# A generated mesh (bench/gen.py); regenerate rather than edit.\n"
                "[verify]\n"
                f"sidecar_ms = {SIDECAR_MS}\n"
                f"sidecars_per_hop = {SIDECARS_PER_HOP}\n"
            ),
            "mesh.mesh": (
                f"# Generated by bench/gen.py: {self.n} services, {len(self.edges)} call edges.\n"
                "mesh synth {\n"
                '  trust_domain "synth.example"\n'
                "  mtls strict\n"
                "  default deny\n"
                "  tracing w3c sample 1%\n"
                "  metrics on\n"
                "}\n"
            ),
        }
        for team in ["edge", *self.teams]:
            members = [s for s in self.svcs if s.team == team]
            if not members:
                continue
            out = [f"# Services owned by {team}, and who may call them."]
            for s in members:
                out.append("")
                out.append(f"service {s.name} {{")
                out.extend(f"  {line}" for line in s.lines)
                out.append("}")
                if s.route:
                    out.append("")
                    out.append(f"route {s.name} {{")
                    out.extend(f"  {line}" for line in s.route)
                    out.append("}")
            rules = [r for s in members for r in self.rules.get(s.name, [])]
            limits = [r for s in members for r in self.limits.get(s.name, [])]
            if rules:
                out.append("")
                out.extend(rules)
            if limits:
                out.append("")
                out.extend(limits)
            files[f"teams/{team}.mesh"] = "\n".join(out) + "\n"
        files["assertions.mesh"] = "# Properties the generated mesh is built to have.\n" + "\n".join(
            self.assertions()) + "\n"
        return files


class _Cycle(Exception):
    pass


def generate(n: int, seed: int = 1) -> dict[str, str]:
    """The files of a mesh with n services: {relative path: text}, meshc.toml included."""
    return _Gen(n, seed).files()


def write(files: dict[str, str], outdir: str | Path) -> Path:
    out = Path(outdir)
    for rel, text in files.items():
        p = out / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text, encoding="utf-8")
    return out


def main(argv: list[str]) -> int:
    import argparse

    ap = argparse.ArgumentParser(description="Write a synthetic mesh of N services to OUTDIR.")
    ap.add_argument("n", type=int)
    ap.add_argument("outdir")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args(argv)
    files = generate(args.n, args.seed)
    write(files, args.outdir)
    lines = sum(t.count("\n") for t in files.values())
    print(f"wrote {len(files)} files, {lines} lines, {args.n} services to {args.outdir}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
