"""What the ingress gateways forward: the requests from outside that reach a
service, as classes the service's patterns cannot tell apart.

A request from the internet enters an ingress, is taken by the first ingress
rule whose match holds (methods, paths, headers, queries), and a forward
sends it to a service with the rule's rewrite applied (docs/semantics.md,
"Ingress, tokens and egress"). For one ingress rule and one destination the
requests it takes are a box difference (the rule's box minus the earlier
rules' boxes) over methods, ingress path atoms, header atoms and query
atoms. The path atoms are split over the ingress rules' patterns plus the
*preimages* of the destination's patterns under the rewrite, so each atom is
uniform for the destination: one representative per (method, atom) decides
every request of the class exactly. A rewrite `L -> R` sends `L + s` to
`R + s`; the preimage of a destination pattern q is `L + (q's quotient by
R)`, computed exactly for exact, prefix and glob patterns; a regex pattern
on a rewritten rule is not encoded (Unsupported: the question is reported as
not proved, never guessed).
"""

from __future__ import annotations

import re
from collections import OrderedDict
from dataclasses import dataclass

from ..checks.internet import ADMIN_SEGMENTS
from ..model.types import HTTP_METHODS, Ingress, Mesh, RouteRule
from ..semantics.evaluate import Request, forward_weights
from ..semantics.patterns import glob_regex, normalize_path
from ..semantics.rewrite import fixed_part, rewrite_path
from .atoms import Key, Undecided, Unsupported, key_of, matches, split
from .partition import BOX_LIMIT, DEFAULT_TIMEOUT_MS


@dataclass(frozen=True)
class Entry:
    """One class of requests an ingress forwards to `dest`: the request as
    sent to the ingress, and the path the destination's sidecar sees."""

    ingress: str
    rule: RouteRule
    method: str
    path: str  # at the ingress (normalized)
    headers: tuple[tuple[str, str], ...]
    query: tuple[tuple[str, str], ...]
    host: str
    dest: str
    dest_path: str

    def request(self, token=None) -> Request:
        """The request as sent to the ingress (from outside: no identity)."""
        from urllib.parse import quote_plus

        q = "&".join(f"{quote_plus(k)}={quote_plus(v)}" for k, v in self.query)
        return Request(None, self.ingress, self.method, self.path, self.headers, query=q, host=self.host, token=token)


def sample_host(g: Ingress) -> str:
    """A host the ingress takes (its first `hosts` entry, a wildcard filled in)."""
    if not g.hosts:
        return "example.com"
    h = g.hosts[0]
    if h == "*":
        return "example.com"
    return "www" + h[1:] if h.startswith("*.") else h


# ---- quotients and preimages of patterns ---------------------------------------------------

_LIT, _STAR, _DSTAR, _SEGREST = "lit", "*", "**", "seg*"  # SEGREST: [^/]* (the rest of a `*` segment)


def _glob_tokens(glob: str) -> tuple:
    out, i = [], 0
    while i < len(glob):
        if glob.startswith("**", i):
            out.append((_DSTAR,))
            i += 2
        elif glob[i] == "*":
            out.append((_STAR,))
            i += 1
        else:
            out.append((_LIT, glob[i]))
            i += 1
    return tuple(out)


def _quotient(tokens: tuple, w: str, memo: dict) -> set[tuple]:
    """Token sequences T with: w + x matches `tokens` iff x matches some T."""
    key = (tokens, w)
    if key in memo:
        return memo[key]
    out: set[tuple] = set()
    if not w:
        out.add(tokens)
    elif tokens:
        t, rest = tokens[0], tokens[1:]
        if t[0] == _LIT:
            if w[0] == t[1]:
                out |= _quotient(rest, w[1:], memo)
        elif t[0] == _DSTAR:
            for k in range(len(w) + 1):
                out |= _quotient(rest, w[k:], memo)
            out.add(tokens)  # `**` goes on past w
        else:  # `*` (one char or more) or the rest of one (any number), never `/`
            least = 1 if t[0] == _STAR else 0
            for k in range(least, len(w) + 1):
                if "/" in w[:k]:
                    break
                out |= _quotient(rest, w[k:], memo)
            if "/" not in w:
                out.add(((_SEGREST,),) + rest)  # the segment goes on past w
    memo[key] = out
    return out


def _tokens_regex(tokens: tuple) -> str:
    import re2

    parts = []
    for t in tokens:
        if t[0] == _LIT:
            parts.append(re2.escape(t[1]))
        elif t[0] == _STAR:
            parts.append("[^/]+")
        elif t[0] == _DSTAR:
            parts.append(".*")
        else:
            parts.append("[^/]*")
    return "".join(parts)


def _tokens_glob(tokens: tuple) -> str | None:
    """The tokens as glob text, or None when one is not a glob token."""
    out = []
    for t in tokens:
        if t[0] == _LIT:
            out.append(t[1])
        elif t[0] in (_STAR, _DSTAR):
            out.append(t[0])
        else:
            return None
    return "".join(out)


def preimage(key: Key, left: str, right: str) -> list[Key] | bool:
    """{left + s : right + s matches key}, as keys whose union is that set
    (globs where possible: the atoms split them without the solver); True:
    every `left + s`; an empty list: none."""
    kind, value = key
    if kind == "exact":
        return [("exact", left + value[len(right):])] if value.startswith(right) else []
    if kind == "prefix":
        if value.startswith(right):
            return [("prefix", left + value[len(right):])]
        return True if right.startswith(value) else []
    if kind == "glob":
        out: list[Key] = []
        for tail in sorted(_quotient(_glob_tokens(value), right, {})):
            g = _tokens_glob(tail)
            if g is not None and left.endswith("/") and g.startswith("/"):
                continue  # `left` then `/`: no normalized path has `//`
            if g == "**":
                out.append(("prefix", left))
            elif g is not None:
                out.append(("glob", left + g) if g else ("exact", left))
            else:
                import re2

                out.append(("regex", re2.escape(left) + _tokens_regex(tail)))
        return out
    raise Unsupported(f"the regex path {value!r} cannot be followed through an ingress rewrite")


# ---- boxes --------------------------------------------------------------------------------

def _meet(a, b):
    out = tuple(x & y for x, y in zip(a, b))
    return None if any(not x for x in out) else out


def _minus(pieces: list, boxes: list, limit: int) -> list:
    out = list(pieces)
    for b in boxes:
        nxt = []
        for a in out:
            if _meet(a, b) is None:
                nxt.append(a)
                continue
            cur = list(a)
            for k in range(len(cur)):
                rest = cur[k] - b[k]
                if rest:
                    nxt.append(tuple(cur[:k] + [rest] + cur[k + 1:]))
                cur[k] = cur[k] & b[k]
        out = nxt
        if len(out) > limit:
            raise Undecided(f"the ingress rules split into more than {limit} request classes")
    return out


class _Space:
    """Method x ingress path atom x header atoms x query atoms, for some rules."""

    def __init__(self, rules: list[RouteRule], extra_paths: list[Key], timeout_ms: int):
        keys: list[Key] = []
        headers: dict[str, list[Key]] = {}
        queries: dict[str, list[Key]] = {}
        for r in rules:
            keys.extend(key_of(p) for p in r.match.paths)
            for h in r.match.headers:
                ks = headers.setdefault(h.name, [])
                if h.kind in ("exact", "prefix", "regex"):
                    ks.append((h.kind, h.value or ""))
            for q in r.match.queries:
                ks = queries.setdefault(q.name, [])
                if q.kind in ("exact", "prefix", "regex"):
                    ks.append((q.kind, q.value or ""))
        self.paths = split(list(dict.fromkeys(keys + extra_paths)), "path", timeout_ms)
        self.hnames, self.qnames = sorted(headers), sorted(queries)
        self.hatoms = {n: [None] + split(headers[n], "value", timeout_ms) for n in self.hnames}
        self.qatoms = {n: [None] + split(queries[n], "value", timeout_ms) for n in self.qnames}
        self.sizes = [len(HTTP_METHODS), len(self.paths)] + [len(self.hatoms[n]) for n in self.hnames] + [
            len(self.qatoms[n]) for n in self.qnames]

    def box(self, r: RouteRule, only_paths: list[Key] | None = None) -> tuple:
        m = r.match
        b = [frozenset(range(n)) for n in self.sizes]
        if m.methods:
            b[0] = frozenset(i for i, x in enumerate(HTTP_METHODS) if x in m.methods)
        pk = only_paths if only_paths is not None else [key_of(p) for p in m.paths]
        if pk:
            keys = set(pk)
            b[1] = frozenset(i for i, a in enumerate(self.paths) if a.members & keys)
        for h in m.headers:
            j = 2 + self.hnames.index(h.name)
            atoms = self.hatoms[h.name]
            if h.kind in ("exact", "prefix", "regex"):
                k = (h.kind, h.value or "")
                ok = frozenset(i for i, a in enumerate(atoms) if a is not None and k in a.members)
            else:
                ok = frozenset(i for i, a in enumerate(atoms) if (a is None) == (h.kind == "absent"))
            b[j] &= ok
        for q in m.queries:
            j = 2 + len(self.hnames) + self.qnames.index(q.name)
            atoms = self.qatoms[q.name]
            if q.kind in ("exact", "prefix", "regex"):
                k = (q.kind, q.value or "")
                ok = frozenset(i for i, a in enumerate(atoms) if a is not None and k in a.members)
            else:  # present
                ok = frozenset(i for i, a in enumerate(atoms) if a is not None)
            b[j] &= ok
        if m.sources:  # `from` in an ingress rule is a check error; such a rule takes nothing here
            b[0] = frozenset()
        return tuple(b)

    def pick_extras(self, box) -> tuple[tuple, tuple]:
        hs, qs = [], []
        for j, n in enumerate(self.hnames):
            a = self.hatoms[n][min(box[2 + j])]
            if a is not None:
                hs.append((n, a.witness))
        for j, n in enumerate(self.qnames):
            a = self.qatoms[n][min(box[2 + len(self.hnames) + j])]
            if a is not None:
                qs.append((n, a.witness))
        return tuple(hs), tuple(qs)


def _rewrite_parts(r: RouteRule, key: Key | None) -> tuple[str, str] | None:
    """(L, R) of the rule's path rewrite for requests its pattern `key`
    matched; None without a path rewrite."""
    if r.rewrite is None or r.rewrite.path is None:
        return None
    right = r.rewrite.path
    if key is None:
        return ("", right)  # the whole path is replaced (semantics/rewrite.py)
    left = fixed_part(*key)
    if left is None:
        raise Unsupported(f"rule {r.index + 1} rewrites a regex path match")
    return left, right


def _may_meet(e: RouteRule, r: RouteRule) -> bool:
    """Can an earlier rule take some request rule r matches? Not when every
    pair of their paths needs literal prefixes neither of which extends the
    other (a rule with many routes above it would otherwise split its paths
    by every one of them: quadratic in the rules)."""
    from .atoms import _literal_prefix

    if not e.match.paths or not r.match.paths:
        return True
    for a in e.match.paths:
        la = _literal_prefix(key_of(a)) or ""
        for b in r.match.paths:
            lb = _literal_prefix(key_of(b)) or ""
            if la.startswith(lb) or lb.startswith(la):
                return True
    return False


def _dest_path(r: RouteRule, key: Key | None, path: str) -> str:
    parts = _rewrite_parts(r, key)
    if parts is None:
        return path
    if key is None:
        return parts[1]
    return rewrite_path(key[0], key[1], path, parts[1])


def rule_entries(mesh: Mesh, g: Ingress, j: int, dest: str, dest_keys: list[Key],
                 timeout_ms: int = DEFAULT_TIMEOUT_MS, box_limit: int = BOX_LIMIT,
                 entry_keys: list[Key] = ()) -> list[Entry]:
    """The classes of requests ingress rule j of g forwards to dest, one
    entry per (method, class of the destination's `dest_keys`, class of the
    ingress-side `entry_keys`)."""
    r = g.rules[j]
    if r.action.kind != "forward" or forward_weights(r).get(dest, 0) <= 0:
        return []
    host = sample_host(g)
    pats = [key_of(p) for p in r.match.paths] or [None]
    out: list[Entry] = []
    seen: set = set()
    for pi, key in enumerate(pats):
        parts = _rewrite_parts(r, key)
        extra: list[Key] = []
        constant = parts is not None and (key is None or key[0] == "exact")
        if parts is not None and not constant:
            left, right = parts
            if normalize_path(right) != right or (right.endswith("/") and not left.endswith("/")):
                raise Unsupported(f"ingress `{g.name}` rule {r.index + 1}: rewriting `{left}` to `{right}` "
                                  "makes paths that normalization changes")
            for k in dest_keys:
                pre = preimage(k, left, right)
                if pre is not True:
                    extra.extend(pre)
        elif parts is None:
            extra = list(dest_keys)
        before = [e for e in g.rules[:j] if _may_meet(e, r)]
        space = _Space(before + [r], extra + list(entry_keys), timeout_ms)
        mine = space.box(r, [key] if key is not None else None)
        earlier = [space.box(e) for e in before] + [space.box(r, [k]) for k in pats[:pi] if k is not None]
        if any(not x for x in mine):
            continue  # the rule's own tests contradict each other (e.g. a header absent and equal to x)
        for b in _minus([mine], earlier, box_limit):
            hs, qs = space.pick_extras(b)
            for mi in sorted(b[0]):
                for ai in sorted(b[1]):
                    path = space.paths[ai].witness
                    dpath = _dest_path(r, key, path)
                    if normalize_path(dpath) != dpath:
                        raise Unsupported(f"ingress `{g.name}` rule {r.index + 1} rewrites `{path}` to `{dpath}`, "
                                          "which normalization changes")
                    sig = (HTTP_METHODS[mi], tuple(matches(k, dpath) for k in dest_keys),
                           tuple(matches(k, path) for k in entry_keys))
                    if sig in seen:
                        continue
                    seen.add(sig)
                    out.append(Entry(g.name, r, HTTP_METHODS[mi], path, hs, qs, host, dest, dpath))
    return out


_CACHE: OrderedDict[int, tuple[Mesh, dict]] = OrderedDict()


def entries(mesh: Mesh, dest: str, dest_keys: list[Key], timeout_ms: int = DEFAULT_TIMEOUT_MS,
            box_limit: int = BOX_LIMIT, entry_keys: list[Key] = ()) -> list[Entry]:
    """Every class of requests any ingress forwards to dest (ingress by
    ingress, rule by rule), uniform for `dest_keys`. Cached per mesh."""
    got = _CACHE.get(id(mesh))
    if got is None or got[0] is not mesh:
        got = _CACHE[id(mesh)] = (mesh, {})
        while len(_CACHE) > 4:
            _CACHE.popitem(last=False)
    ck = (dest, tuple(dest_keys), timeout_ms, box_limit, tuple(entry_keys))
    if ck not in got[1]:
        out: list[Entry] = []
        for g in mesh.ingress_map.values():
            for j in range(len(g.rules)):
                out.extend(rule_entries(mesh, g, j, dest, dest_keys, timeout_ms, box_limit, list(entry_keys)))
        got[1][ck] = out
    return got[1][ck]


def forwarded_to(mesh: Mesh) -> dict[str, list[str]]:
    """Per service, the ingresses with a rule that may forward to it."""
    out: dict[str, list[str]] = {}
    for g in mesh.ingress_map.values():
        for r in g.rules:
            if r.action.kind == "forward":
                for name, w in forward_weights(r).items():
                    if w > 0 and mesh.service(name) is not None:
                        out.setdefault(name, [])
                        if g.name not in out[name]:
                            out[name].append(g.name)
    return out


# the segments the checker calls administrative (MP235), for concrete paths
_ADMIN_RE = re.compile("(?:/[^/]+)*/(?:" + "|".join(ADMIN_SEGMENTS) + ")(?:/.*)?", re.IGNORECASE)


def looks_administrative(path: str) -> bool:
    """Does a (normalized) path have an administrative segment?"""
    return _ADMIN_RE.fullmatch(path) is not None


def admin_candidates(r: RouteRule) -> list[str]:
    """Paths with an administrative segment that an ingress rule's patterns
    match: each pattern with a word in its wildcards or after its prefix
    (a search for MP540: splitting every path by "has such a segment" makes
    the atoms of every combination of segments, far too many)."""
    out: list[str] = []
    for p in r.match.paths or [None]:
        for w in ADMIN_SEGMENTS:
            if p is None:
                cands = [f"/{w}", f"/api/{w}"]
            elif p.kind == "exact":
                cands = [p.value]
            elif p.kind == "prefix":
                v = p.value
                cands = [v + w, v + "/" + w, v + w + "/x", v + "/" + w + "/x"]
            elif p.kind == "glob":
                cands = [p.value.replace("**", "\0").replace("*", w).replace("\0", x)
                         for x in (w, f"{w}/x", f"x/{w}")]
            else:
                cands = []
            for c in cands:
                if normalize_path(c) == c and c not in out and (p is None or matches(key_of(p), c)):
                    out.append(c)
    return out


def satisfying_extras(r: RouteRule) -> tuple[tuple, tuple] | None:
    """Headers and query parameters that pass a rule's header and query
    tests (None when a test is a regex: not searched)."""
    hs, qs = [], []
    for h in r.match.headers:
        if h.kind in ("exact", "prefix"):
            hs.append((h.name, h.value or ""))
        elif h.kind == "present":
            hs.append((h.name, "1"))
        elif h.kind == "regex":
            return None
    for q in r.match.queries:
        if q.kind in ("exact", "prefix"):
            qs.append((q.name, q.value or ""))
        elif q.kind == "present":
            qs.append((q.name, "1"))
        else:
            return None
    return tuple(hs), tuple(qs)