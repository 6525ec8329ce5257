"""The parser against each end of the Lark range pyproject.toml pins.

meshpolicy/syntax/parser.py drives Lark's LALR tables and rule callbacks
itself (private internals: `lark.parser.parser.parser`, its parse table and
callbacks, and the callback wrappers of lark.parse_tree_builder), which is
1.4-1.7x faster than Lark's public InteractiveParser (bench/bench_parser.py,
docs/performance.md). The price is this test: the oldest and the newest
release the pin allows are fetched with pip (wheels only, no dependencies),
and each must load the shipped tables, take the direct callback path, and
give exactly the trees and diagnostics the installed Lark gives, on every
example, on every code's fixture (the bad and the fixed) and on broken
input. Skipped, with the reason, when pip cannot reach
a package index.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

from .conftest import EXAMPLES, ROOT

BROKEN = [
    "service a {\n port 80\n timeout \"2s\"\n}\nallow a ->\n}\nservice c {\n",
    "service a { port 80 http\n retry 3 per_try 2s on 5xx, reset, 503\n circuit max_connections 10 max_pending 5\n"
    " outlier consecutive_5xx 5 interval 10s eject 30s max 50%\n version v1 { version: \"v1\" } }\n"
    "route a {\n GET, POST /x/* -> v1 90%, v1 10% ~> v1 5%\n header \"x\" = \"y\" -> v1\n}\n"
    "allow a, namespace n, internet with jwt p (sub = \"x\") -> a GET /p\n"
    "assert a ~> a amplification 3\nlimit a -> a 10/s burst 5 by header \"x\"\n",
    "mesh m { trust_domain \"x\" ; mtls strict ; default deny ; tracing b3 sample 10% }\n"
    "service b { timeout 1.5s ; timeout 2s ; port 99999999999999999999 http }\n\"open\n@ bad\n}",
]

# Run under the other Lark: one line of JSON, {file: hash of repr(tree, diagnostics)}.
PROBE = r"""
import hashlib, json, sys
import lark
from meshpolicy.syntax import parser as P, tables
assert lark.__version__ == sys.argv[1], (lark.__version__, sys.argv[1])
assert tables.load_shipped() is not None, "the shipped tables do not load"
g = P.grammar()
direct = sum(1 for acts in g.states.values() for action, arg in acts.values()
             if action is not P.Shift and type(arg[2]).__module__ != "lark.parse_tree_builder")
assert direct > 100, f"only {direct} rule callbacks take the direct path"
texts = json.loads(sys.stdin.read())
out = {}
for name, text in texts.items():
    tree, diags = P.parse_text(text, name)
    out[name] = hashlib.sha256((repr(tree) + repr(diags)).encode()).hexdigest()
print(json.dumps(out))
"""


def _pinned_range() -> str:
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["dependencies"]
    spec = next(d for d in deps if re.match(r"lark\b", d))
    assert re.fullmatch(r"lark>=[0-9.]+,<[0-9.]+", spec.replace(" ", "")), spec
    return spec.replace(" ", "")


def _fetch(requirement: str, dest: Path) -> Path:
    """The wheel pip picks for requirement, unpacked into dest (skip when no index answers)."""
    wheels = dest / "wheels"
    try:
        r = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
                            "--disable-pip-version-check", "-q", "-d", str(wheels), requirement],
                           capture_output=True, text=True, timeout=120)
    except subprocess.TimeoutExpired:
        pytest.skip(f"pip download {requirement}: no package index answered within 120 s")
    found = sorted(wheels.glob("lark-*.whl")) if wheels.is_dir() else []
    if r.returncode != 0 or not found:
        pytest.skip(f"pip download {requirement} failed (no package index reachable?): {r.stderr.strip()[-300:]}")
    site = dest / "site"
    with zipfile.ZipFile(found[0]) as whl:
        whl.extractall(site)
    return site


def _texts() -> dict[str, str]:
    files = sorted(EXAMPLES.rglob("*.mesh")) + sorted((ROOT / "tests" / "fixtures" / "codes").rglob("*.mesh"))
    texts = {}
    for p in files:
        try:
            texts[str(p.relative_to(ROOT))] = p.read_text(encoding="utf-8")
        except UnicodeDecodeError:  # a fixture of MP001 (not UTF-8): nothing for the parser
            continue
    texts.update({f"broken{i}.mesh": t for i, t in enumerate(BROKEN)})
    return texts


def _hashes(texts: dict[str, str]) -> dict[str, str]:
    from meshpolicy.syntax.parser import parse_text

    out = {}
    for name, text in texts.items():
        tree, diags = parse_text(text, name)
        out[name] = hashlib.sha256((repr(tree) + repr(diags)).encode()).hexdigest()
    return out


@pytest.mark.parametrize("end", ["oldest", "newest"])
def test_parser_gives_the_same_trees_under_each_end_of_the_pinned_lark_range(end, tmp_path):
    spec = _pinned_range()
    low = re.search(r">=([0-9.]+)", spec).group(1)
    requirement = f"lark=={low}" if end == "oldest" else spec
    site = _fetch(requirement, tmp_path)
    version = re.fullmatch(r"lark-([0-9.]+)\.dist-info", next(p.name for p in site.glob("lark-*.dist-info"))).group(1)
    if end == "oldest":
        assert version == low
    texts = _texts()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(ROOT)])}
    r = subprocess.run([sys.executable, "-c", PROBE, version], input=json.dumps(texts), capture_output=True,
                       text=True, cwd=ROOT, env=env, timeout=300)
    assert r.returncode == 0, f"lark {version}: {r.stderr[-3000:]}"
    theirs = json.loads(r.stdout)
    ours = _hashes(texts)
    assert len(ours) > 100
    assert theirs == ours, f"lark {version} parses differently: {[k for k in ours if theirs.get(k) != ours[k]]}"
