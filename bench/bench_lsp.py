"""Language-server latency: `python bench/bench_lsp.py [--edits 50] [--lines 2000] [--mesh 1000]`.

Starts the real server (`meshc lsp`) over stdio and opens either one
generated file of about `--lines` lines (the bench/gen.py mesh, concatenated
into one file) or, with `--mesh N`, one team file of the N-service bench
mesh written as its files (N=1000: 53 files, 13.6k lines; the other files
are read from disk). It makes `--edits` edits, one at a time: each renames
the callee of some allow rule (so the file gains an MP101 error) or renames
it back. For each edit it measures the wall time from sending didChange to
receiving the publishDiagnostics for that document version: debounce +
parse + check + publish. It also reads the server's CPU time per edit (all
its threads, from /proc), which the machine's other load does not inflate.

Rows: `--no-verify` with a typing pause of `--pause` s between edits; and the
verifier on (the default) with pauses longer than its wait for quiet
(`verifyDelayMs`, 400 ms), so that it starts after every edit and is still
running, or just finished, when the next edit comes: what a user who pauses
to think gets. The verifier's findings come in a later publication and are
not waited for; the table counts how many came (`verified`). The verifier
runs in a child process of the server (`process`); `--thread-row` adds a
row with it on a thread of the server (`"verifyIn": "thread"`, how it ran
before 2026-12-07). "server CPU" is the server process's own threads;
"verifier CPU" the children's total over the row (from /proc, once reaped).
Rows take turns, `--rounds` times, so that a slow spell of a shared machine
hits every row alike. Prints a Markdown table for docs/performance.md.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from lsprotocol import types as lsp  # noqa: E402
from pygls.lsp.client import LanguageClient  # noqa: E402
from pygls.uris import from_fs_path  # noqa: E402

from bench.gen import generate  # noqa: E402

TARGET_P95_MS = 50
from meshpolicy.lsp import DEFAULT_DEBOUNCE_MS as DEBOUNCE_MS  # noqa: E402  (meshc lsp --debounce-ms)

VERIFY_DELAY_S = 0.4  # the server's default wait for quiet before verifying (server.py)


def one_file(lines: int) -> str:
    """The generated mesh's files, concatenated: the smallest such mesh of at least `lines` lines."""
    n = 20
    while True:
        files = generate(n)
        text = "".join(v if v.endswith("\n") else v + "\n" for k, v in files.items() if k.endswith(".mesh"))
        if text.count("\n") >= lines:
            return text
        n += max(1, n // 20)


def cpu_ns(pid: int) -> int:
    """CPU time so far of every thread of process pid (Linux schedstat, in ns)."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            total += int((task / "schedstat").read_text().split()[0])
        except (OSError, ValueError):
            pass
    return total


def mesh_files(n: int) -> dict[str, str]:
    """The n-service bench mesh's files (and meshc.toml), by relative path."""
    return generate(n)


def children_cpu_s(pid: int) -> float:
    """CPU seconds of pid's reaped children (the verifier processes): cutime + cstime."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[13]) + int(fields[14])) / os.sysconf("SC_CLK_TCK")


async def run(files: dict[str, str], open_path: str, edits: int, extra: list[str], seed: int,
              pause: float, options: dict) -> tuple[list[float], list[float], int, int, float]:
    """(wall ms per edit, server CPU ms per edit, lines of the mesh, verifier publications,
    verifier children's CPU seconds)."""
    with tempfile.TemporaryDirectory() as tmp:
        for rel, body in files.items():
            (Path(tmp) / rel).parent.mkdir(parents=True, exist_ok=True)
            (Path(tmp) / rel).write_text(body)
        if "meshc.toml" not in files:
            (Path(tmp) / "meshc.toml").write_text("")
        path = Path(tmp) / open_path
        text = files[open_path]
        uri = from_fs_path(str(path))
        client = LanguageClient("bench", "1")
        published: dict[int, float] = {}
        seen: dict[int, int] = {}  # publications per version: a second one carries the verifier's findings
        got = asyncio.Event()

        @client.feature(lsp.TEXT_DOCUMENT_PUBLISH_DIAGNOSTICS)
        def on_diags(params: lsp.PublishDiagnosticsParams):
            if params.uri == uri and params.version is not None:
                seen[params.version] = seen.get(params.version, 0) + 1
                if params.version not in published:
                    published[params.version] = time.perf_counter()
                    got.set()

        await client.start_io(sys.executable, "-m", "meshpolicy.cli", "lsp", *extra)
        await client.initialize_async(lsp.InitializeParams(capabilities=lsp.ClientCapabilities(),
                                                           root_uri=from_fs_path(tmp),
                                                           initialization_options=options))
        client.initialized(lsp.InitializedParams())
        client.text_document_did_open(lsp.DidOpenTextDocumentParams(
            lsp.TextDocumentItem(uri=uri, language_id="mesh", version=1, text=text)))
        await asyncio.wait_for(got.wait(), 120)
        lines = text.splitlines()
        allow = [i for i, ln in enumerate(lines) if ln.startswith("allow ") and " -> " in ln]
        rng = random.Random(seed)
        times, cpu = [], []
        pid = client._server.pid
        broken: dict[int, tuple[int, int]] = {}
        await asyncio.sleep(pause)  # the opening analysis (and verification) settle like any edit's
        for k in range(edits):
            version = k + 2
            if broken and (k % 2 == 1):  # rename back
                i, (start, end) = broken.popitem()
                new, rng_end = lines[i][start:end], end + 1
            else:
                i = rng.choice(allow)
                start = lines[i].index(" -> ") + 4
                end = start + len(lines[i][start:].split()[0])
                broken[i] = (start, end)
                new, rng_end = lines[i][start:end] + "x", end
            got.clear()
            c0 = cpu_ns(pid)
            t0 = time.perf_counter()
            client.text_document_did_change(lsp.DidChangeTextDocumentParams(
                text_document=lsp.VersionedTextDocumentIdentifier(uri=uri, version=version),
                content_changes=[lsp.TextDocumentContentChangePartial(
                    range=lsp.Range(lsp.Position(i, start), lsp.Position(i, rng_end)), text=new)]))
            while version not in published:
                await asyncio.wait_for(got.wait(), 120)
                got.clear()
            times.append((published[version] - t0) * 1000)
            cpu.append((cpu_ns(pid) - c0) / 1e6)
            await asyncio.sleep(pause)  # a pause, so each edit is measured on its own
        children = children_cpu_s(pid)
        await client.shutdown_async(None)
        client.exit(None)
        await client.stop()
        total = sum(body.count("\n") for rel, body in files.items() if rel.endswith(".mesh"))
        return times, cpu, total, sum(1 for v, c in seen.items() if v > 1 and c > 1), children


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, max(0, round(p / 100 * len(xs) + 0.5) - 1))]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--edits", type=int, default=50)
    ap.add_argument("--lines", type=int, default=2000, help="one file of about this many lines")
    ap.add_argument("--mesh", type=int, default=0, help="instead: the N-service bench mesh, as its files")
    ap.add_argument("--pause", type=float, default=0.1, help="seconds between edits, verifier off")
    ap.add_argument("--verify-pause", type=float, default=VERIFY_DELAY_S + 0.3,
                    help="seconds between edits, verifier on (more than its 400 ms wait, so it runs)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=1, help="rows take turns this many times")
    ap.add_argument("--thread-row", action="store_true", help="also: the verifier on a thread of the server")
    args = ap.parse_args()
    if args.mesh:
        files = mesh_files(args.mesh)
        open_path = sorted(k for k in files if k.startswith("teams/"))[len([k for k in files if k.startswith("teams/")]) // 2]
        what = f"{args.mesh} services, {sum(k.endswith('.mesh') for k in files)} files"
    else:
        files = {"big.mesh": one_file(args.lines)}
        open_path = "big.mesh"
        what = "one file"
    load = os.getloadavg()[0]
    print(f"Language server, {platform.python_implementation()} {platform.python_version()}, "
          f"{os.cpu_count()} cores, load average {load:.1f} at start: didChange -> publishDiagnostics "
          f"(debounce {DEBOUNCE_MS} ms + parse + check + publish), {args.edits} edits to `{open_path}`\n")
    print("| mesh | verifier | pause | wall p50 | wall p95 | wall max | server CPU p50 | server CPU p95 "
          "| verifier CPU | verified | target: p95 |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    rows = [("on (process)", [], args.verify_pause, {"verifyIn": "process"})]
    if args.thread_row:
        rows.append(("on (thread)", [], args.verify_pause, {"verifyIn": "thread"}))
    rows.append(("off", ["--no-verify"], args.pause, {}))
    ok = True
    for r in range(args.rounds):
        for label, extra, pause, options in rows:
            times, cpu, n, verified, children = asyncio.run(
                run(files, open_path, args.edits, extra, args.seed, pause, options))
            p95 = pct(times, 95)
            ok &= p95 < TARGET_P95_MS
            print(f"| {what}, {n} lines | {label} | {pause * 1000:.0f} ms | {statistics.median(times):.0f} ms "
                  f"| {p95:.0f} ms | {max(times):.0f} ms | {statistics.median(cpu):.0f} ms | {pct(cpu, 95):.0f} ms "
                  f"| {f'{children:.1f} s' if label != 'off' else '-'} | {verified if label != 'off' else '-'} "
                  f"| < {TARGET_P95_MS} ms {'✓' if p95 < TARGET_P95_MS else '✗'} |", flush=True)
    print(f"\nload average {os.getloadavg()[0]:.1f} at the end")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
