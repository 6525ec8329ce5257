"""What the parser's own LALR loop buys over Lark's public API: `python bench/bench_parser.py [--n 1000]`.

meshpolicy/syntax/parser.py runs Lark's tables and rule callbacks itself
(private Lark internals: the parse table and callbacks of
`lark.parser.parser.parser`). The alternative with public API only is
Lark's InteractiveParser (`parse_interactive`, `choices`, `feed_token`,
`feed_eof`), which allows the same per-item driving, contextual keywords and
error recovery. Both parse the same generated mesh (bench/gen.py) with the
same tokenizer, item splitting and callbacks; the table shows CPU seconds
per parse of all its files (median of --runs, after a warm-up) and checks
that both give the same trees and diagnostics.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from lark import Token  # noqa: E402
from lark.exceptions import UnexpectedInput  # noqa: E402

from bench.gen import generate  # noqa: E402
from meshpolicy.syntax import parser as P  # noqa: E402
from meshpolicy.syntax import tables  # noqa: E402
from meshpolicy.syntax.transform import CURRENT, ParseContext, ToNodes  # noqa: E402


class PublicDriver(P._Driver):
    """The same driver, its LALR steps through Lark's InteractiveParser."""

    lark = None

    def __init__(self, text, path, ctx):
        super().__init__(text, path, ctx)
        self.ip = None

    def _feed(self, tok):
        self.item.append(tok)
        if self.failed:
            return
        if self.ip is None:
            self.ip = self.lark.parse_interactive(start=tables.BLOCK_STARTS[self.stack[-1].kind])
        accepted = self.ip.choices()
        ok = [name for name in self.g.candidates(tok.type, tok.value) if name in accepted]
        if not ok:
            self._syntax_error(tok, accepted)
            return
        name = ok[0]
        if len(ok) > 1:  # as parser.py: the reading whose reductions end in a shift (public: accepts())
            shifts = self.ip.accepts()
            name = next((n for n in ok if n in shifts), name)
        tok.type = name
        try:
            self.ip.feed_token(tok)  # Lark reads only .type; the callbacks get meshpolicy's Tok
        except UnexpectedInput:
            self._syntax_error(tok, accepted)

    def _end_item(self):
        toks = self.item
        if not toks:
            return
        self.item = []
        opens_block = toks[-1].value == "{" and toks[-1].type != "STRING"
        ip, self.ip = self.ip, None
        failed, self.failed = self.failed, False
        node = None
        if not failed and ip is not None:
            accepted = ip.choices()
            try:
                node = ip.feed_token(Token("$END", ""))
            except UnexpectedInput:
                self.diags.append(P.diag("MP002", f"this statement is incomplete; expected "
                                         f"{self.g.describe(accepted)} after `{toks[-1]}`",
                                         self._span(toks[0], toks[-1])))
        if node is None:
            if opens_block:
                self.stack.append(P._Frame(P._guess_block(toks), None, error=True))
            return
        node.span = self._span(toks[0], toks[-1])
        if node.kind == "block_open" or (node.kind == "version" and node.get("opens")):
            kind = node.get("block") if node.kind == "block_open" else "version"
            self.stack.append(P._Frame(kind, node))
        else:
            self.stack[-1].items.append(node)


def parse_with(driver, text: str, path: str):
    ctx = ParseContext(path)
    token = CURRENT.set(ctx)
    try:
        return driver(text, path, ctx).run()
    finally:
        CURRENT.reset(token)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--runs", type=int, default=7)
    args = ap.parse_args()
    PublicDriver.lark = tables.load(transformer=ToNodes())
    files = {p: t for p, t in generate(args.n, seed=1).items() if p.endswith(".mesh")}
    lines = sum(t.count("\n") for t in files.values())
    # Same result first: trees and diagnostics (with a few broken statements in the mix).
    broken = {**files, "broken.mesh": "service a {\n port 80\n timeout \"2s\"\n}\nallow a ->\n}\nservice c {\n"}
    for path, text in broken.items():
        assert parse_with(P._Driver, text, path) == parse_with(PublicDriver, text, path), path
    results = {}
    for name, driver in (("own LALR loop (parser.py)", P._Driver), ("Lark InteractiveParser (public API)",
                                                                   PublicDriver)):
        for path, text in files.items():
            parse_with(driver, text, path)  # warm-up
        times = []
        for _ in range(args.runs):
            t0 = time.process_time()
            for path, text in files.items():
                parse_with(driver, text, path)
            times.append(time.process_time() - t0)
        results[name] = statistics.median(times)
    print(f"{args.n} services, {len(files)} files, {lines} lines; median of {args.runs} runs, CPU seconds\n")
    print("| parser | parse (s) | lines/s |")
    print("|---|---|---|")
    for name, t in results.items():
        print(f"| {name} | {t:.3f} | {lines / t:,.0f} |")
    own, public = results.values()
    print(f"\nthe own loop is {public / own:.2f}x as fast")


if __name__ == "__main__":
    main()
