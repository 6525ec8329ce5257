"""The pygls server: document sync, scheduling, and the LSP features.

Scheduling: every open/change/close bumps its mesh's generation and
restarts a short debounce; the analysis (parse + check) then runs on a
worker thread, off the event loop, and its result is published only if no
newer edit arrived meanwhile (a stale result is dropped). Verifier findings
follow in a second pass once typing pauses, at most one run per mesh at a
time, always on the newest clean analysis, in a forked child process
(verifier_process.py) so that it never holds the interpreter while an
edit is checked; an edit kills a run under way. Requests
(hover, definition...) use the newest analysis, computing it first if edits
are pending.

Garbage collection: the cyclic GC is off while the server runs, and a full
collection runs once typing has paused (IDLE_GC_S). Left on, its
collections landed in the middle of analyses, about a tenth of their time
and most of the slow edits; what an analysis allocates is freed by
reference counting anyway, cycles are rare and wait for the pause.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from lsprotocol import types as lsp
from pygls.lsp.server import LanguageServer

from .. import __version__
from ..diagnostics import has_errors
from ..span import SourceFile
from . import DEFAULT_DEBOUNCE_MS, MAX_FILE_BYTES, complete, hover
from .carry import Edit, carry
from .convert import offset_at, path_of, span_range, to_lsp, uri_of, use_lsp_line_ends
from .meshes import Analysis, Cancelled, ParseCache, analyse, root_of, verify
from .verifier_process import FORK, VerifierProcess
from .rpc import PARSE_ERROR, MeshProtocol, is_parse_error
from .symbols import document_symbols

log = logging.getLogger("meshc.lsp")

IDLE_GC_S = 2.0


@dataclass
class MeshState:
    generation: int = 0
    task: asyncio.Task | None = None
    analysis: Analysis | None = None
    published: set[str] = field(default_factory=set)  # URIs that got diagnostics last time
    # What each of those URIs got last: (document version, diagnostics). A
    # client keeps the last publication per URI, so an identical one is
    # not sent again (publish).
    sent: dict[str, tuple[int | None, list[lsp.Diagnostic]]] = field(default_factory=dict)
    published_generation: int = -1
    verifying: bool = False
    error_generation: int = -1
    verify_next: Analysis | None = None
    verifier: VerifierProcess | None = None  # the child verifying this mesh now
    stopping: VerifierProcess | None = None  # the last child killed, until it is gone
    # The last verifier findings, by file, as published: shown with every
    # analysis until the next verification replaces them (carry.py).
    kept: dict[str, list[lsp.Diagnostic]] = field(default_factory=dict)


class MeshLanguageServer(LanguageServer):
    def __init__(self, debounce_ms: int = DEFAULT_DEBOUNCE_MS, run_verifier: bool = True,
                 verify_delay_ms: int = 400):
        super().__init__("meshc", __version__, protocol_cls=MeshProtocol)
        self.debounce = debounce_ms / 1000
        # The verifier is slow: it starts only once typing has paused this
        # long, so it never delays the next check (and an edit stops it).
        self.verify_delay = verify_delay_ms / 1000
        self.run_verifier = run_verifier
        self.meshes: dict[str, MeshState] = {}
        self.parse_cache = ParseCache()  # only touched on the check thread
        self.check_pool = ThreadPoolExecutor(1, thread_name_prefix="meshc-check")
        self.verify_pool = ThreadPoolExecutor(1, thread_name_prefix="meshc-verify")  # without os.fork only
        # Whether verifications run in a child process (see verifier_process.py).
        self.verify_in_process = FORK
        # Jobs given to the check thread and not yet seen finished (counted on
        # the event loop): a verifier child is forked only when this is 0.
        self.check_jobs = 0
        self.verifier_loaded = False
        self.docs_url: str | None = None  # a mirror of the code pages (the `docsUrl` option)
        self._gc_timer: asyncio.TimerHandle | None = None
        self.collections = 0  # idle collections run (for tests)
        self.analysing = 0  # analyses running on the check thread (written there only)
        self.shutdown_requested = False
        self.cancelled_verifications = 0

    def report_server_error(self, error: Exception, source) -> None:
        """pygls calls this with what reading a message raised; a body that is
        not JSON is answered with a Parse error (id null), as JSON-RPC requires."""
        if is_parse_error(error):
            self.protocol.reply_error(None, PARSE_ERROR, "parse error: the message is not JSON")
            return
        super().report_server_error(error, source)

    # ---- documents and meshes
    @property
    def encoding(self) -> str:
        return self.workspace.position_encoding or lsp.PositionEncodingKind.Utf16

    def buffers(self) -> dict[str, str]:
        return {path_of(uri): doc.source for uri, doc in self.workspace.text_documents.items()}

    def state(self, root: str) -> MeshState:
        return self.meshes.setdefault(root, MeshState())

    def touch_open_meshes(self) -> None:
        roots: dict[str, str] = {}
        for uri in self.workspace.text_documents:
            roots.setdefault(root_of(path_of(uri)), uri)
        for uri in roots.values():
            self.touch(uri)

    async def watch_files(self) -> None:
        """Ask the client to report .mesh and meshc.toml files changed on disk,
        when it can register watchers dynamically (most editors can)."""
        caps = self.client_capabilities.workspace
        dyn = caps.did_change_watched_files if caps else None
        if not (dyn and dyn.dynamic_registration):
            return
        watchers = [lsp.FileSystemWatcher(glob_pattern="**/*.mesh"),
                    lsp.FileSystemWatcher(glob_pattern="**/meshc.toml")]
        try:
            await self.client_register_capability_async(lsp.RegistrationParams(registrations=[lsp.Registration(
                id="meshc-watch", method=lsp.WORKSPACE_DID_CHANGE_WATCHED_FILES,
                register_options=lsp.DidChangeWatchedFilesRegistrationOptions(watchers=watchers))]))
        except Exception as exc:  # the client said no: edits and saves still refresh
            log.warning("could not register file watchers: %s", exc)

    def forget(self, root: str) -> None:
        """Drop what is kept for a mesh none of whose files is open: its
        analysis, the parse trees and models of its files, its diagnostics
        (they would no longer follow the files)."""
        st = self.meshes.pop(root, None)
        if st is None:
            return
        if st.task is not None:
            st.task.cancel()
        st.generation += 1  # a verification under way stops, its result is dropped
        st.verify_next = None
        files = set(st.analysis.files) if st.analysis is not None else set()
        st.analysis = None
        for uri in st.published:
            files.add(path_of(uri))
            self.text_document_publish_diagnostics(lsp.PublishDiagnosticsParams(uri=uri, diagnostics=[]))
        self._stop_verifier(st)
        self._on_check_thread(self.parse_cache.forget, files)  # the cache belongs to the check thread
        self._collect_when_idle()

    def carry_findings(self, params: lsp.DidChangeTextDocumentParams) -> None:
        """Move the kept verifier findings through the edits of a document."""
        uri = params.text_document.uri
        st = self.meshes.get(root_of(path_of(uri)))
        if st is None or not st.kept:
            return
        for change in params.content_changes:
            if not isinstance(change, lsp.TextDocumentContentChangePartial):
                st.kept.pop(path_of(uri), None)  # the whole text replaced: nothing of it is known to hold
                continue
            edit = Edit(change.range, change.text, self.encoding)
            st.kept = {f: carry(ds, uri_of(f), uri, edit) for f, ds in st.kept.items()}

    def touch(self, uri: str) -> None:
        if self._gc_timer is not None:
            self._gc_timer.cancel()
        root = root_of(path_of(uri))
        st = self.state(root)
        st.generation += 1
        self._stop_verifier(st)  # before the analysis: its result is stale, and it would compete for the CPU
        if st.task is not None and not st.task.done():
            st.task.cancel()
        st.task = asyncio.get_running_loop().create_task(self._refresh(root, st.generation))

    async def _refresh(self, root: str, generation: int) -> None:
        try:
            await asyncio.sleep(self.debounce)
            st = self.state(root)
            if st.stopping is not None and not st.stopping.future.done():
                # A killed verifier shares the server's memory pages until it
                # has exited: an analysis before that would copy every page it
                # writes (about 10 ms of CPU on the bench mesh). Its exit is
                # quick, unless the machine is too busy to run it.
                await asyncio.wait([st.stopping.future], timeout=0.1)
            a = st.analysis
            if a is None or a.generation != generation:
                a = await self._analyse(root, generation)
                if a is None:
                    return
            if st.published_generation != generation:
                self.publish(a)
                self._queue_verify(root, a)
        finally:
            self._collect_when_idle()  # however this edit ended: published, stale or failed

    def _collect_when_idle(self) -> None:
        """Run the cyclic GC once nothing has happened for IDLE_GC_S (see the module doc)."""
        if self._gc_timer is not None:
            self._gc_timer.cancel()
        if gc.isenabled():
            return  # not running under serve(): the interpreter collects as usual
        self._gc_timer = asyncio.get_running_loop().call_later(IDLE_GC_S, self._collect)

    def _collect(self) -> None:
        if self.analysing or any(st.verifying for st in self.meshes.values()):
            self._collect_when_idle()  # never in the middle of an analysis or a verification
            return
        gc.collect()
        self.collections += 1

    def _analyse_now(self, root: str, buffers: dict[str, str], generation: int) -> Analysis:
        """On the check thread. `analysing` counts what runs there, even for
        an edit whose task was cancelled meanwhile (its analysis still runs)."""
        self.analysing += 1
        try:
            return analyse(root, buffers, generation, self.parse_cache)
        finally:
            self.analysing -= 1

    def _on_check_thread(self, fn, *args) -> asyncio.Future:
        """Run fn on the check thread, counted in `check_jobs` until the event loop sees it end."""
        self.check_jobs += 1
        fut = asyncio.get_running_loop().run_in_executor(self.check_pool, fn, *args)

        def done(_f) -> None:
            self.check_jobs -= 1

        fut.add_done_callback(done)
        return fut

    async def _analyse(self, root: str, generation: int) -> Analysis | None:
        """Analyse the mesh's current texts; None when a newer edit made the result stale."""
        buffers = self.buffers()
        st = self.state(root)
        try:
            a = await self._on_check_thread(self._analyse_now, root, buffers, generation)
        except Exception as exc:  # a bug in a check: say so once, keep serving
            log.exception("analysis of %s failed", root)
            st.verify_next = None  # an older analysis is no longer the text to verify
            if st.error_generation != generation:  # once per edit, not per retry
                st.error_generation = generation
                self.window_show_message(lsp.ShowMessageParams(
                    type=lsp.MessageType.Error,
                    message=f"meshc: internal error while checking {root}: {type(exc).__name__}: {exc}"))
            return None
        if st.generation != generation:
            log.debug("dropped a stale analysis of %s", root)
            return None
        st.analysis = a
        log.debug("analysed %s in %.1f ms", root, a.seconds * 1000)
        return a

    async def current(self, uri: str) -> Analysis:
        """The analysis of uri's mesh that matches what the client sees now."""
        root = root_of(path_of(uri))
        st = self.state(root)
        for _ in range(5):  # edits arriving meanwhile make a result stale; don't chase them forever
            if st.analysis is not None and st.analysis.generation == st.generation:
                break
            await self._analyse(root, st.generation)
        if st.analysis is None:
            raise RuntimeError(f"meshc could not analyse {root}")
        return st.analysis

    def publish(self, a: Analysis) -> None:
        st = self.state(a.root)
        st.published_generation = a.generation
        by_file: dict[str, list[lsp.Diagnostic]] = {f: [] for f in a.files}
        buffers = self.buffers()
        open_files = [f for f in a.files if f in buffers]
        fallback = (open_files or a.files or [a.root])[0]
        verified = {id(d) for d in a.verified} if a.verified is not None else None
        fresh: dict[str, list[lsp.Diagnostic]] = {}
        for d in a.diagnostics:
            f = d.span.file if d.span and d.span.file in a.sources else fallback
            ld = to_lsp(d, a.sources, self.encoding, self.docs_url, fallback=a.sources.get(f))
            by_file.setdefault(f, []).append(ld)
            if verified is not None and id(d) in verified:
                fresh.setdefault(f, []).append(ld)
        if verified is not None:
            st.kept = fresh  # this run's findings replace the last run's
        elif self.run_verifier:
            for f, kept in st.kept.items():  # the last run's stay until the next one (carry.py)
                if f in by_file:
                    by_file[f] = by_file[f] + kept
        # Only what the client does not have yet: a file whose diagnostics
        # and version are those of its last publication is skipped (on the
        # bench mesh an edit changes one file's of 53; encoding and writing
        # the other 52 was most of the publishing). An edited document's
        # version changes, so it is always published: the client learns
        # which version its diagnostics are for. A verifier run's result is
        # published whole, as the answer to the analysis it verified.
        again = verified is not None
        uris = set()
        sent: dict[str, tuple[int | None, list[lsp.Diagnostic]]] = {}
        for f, diags in by_file.items():
            uri = uri_of(f)
            uris.add(uri)
            doc = self.workspace.text_documents.get(uri)
            now = (doc.version if doc else None, diags)
            sent[uri] = now
            if again or st.sent.get(uri) != now:
                self.text_document_publish_diagnostics(lsp.PublishDiagnosticsParams(
                    uri=uri, diagnostics=diags, version=now[0]))
        for uri in st.published - uris:  # files that left the mesh
            self.text_document_publish_diagnostics(lsp.PublishDiagnosticsParams(uri=uri, diagnostics=[]))
        st.published = uris
        st.sent = sent

    def _queue_verify(self, root: str, a: Analysis) -> None:
        st = self.state(root)
        if not self.run_verifier or has_errors(a.checked.diagnostics):
            st.verify_next = None  # nothing to verify until the mesh checks clean
            return
        st.verify_next = a
        if not st.verifying:
            st.verifying = True
            asyncio.get_running_loop().create_task(self._verify_loop(root))

    async def _verify_loop(self, root: str) -> None:
        st = self.state(root)
        loop = asyncio.get_running_loop()
        try:
            while st.verify_next is not None:
                a = st.verify_next
                await asyncio.sleep(self.verify_delay)
                if st.verify_next is not a:
                    continue  # a newer clean analysis came: wait for typing to pause on it
                st.verify_next = None
                if st.generation != a.generation:
                    break  # edits since, not analysed yet: their analysis queues itself
                stale = lambda: st.generation != a.generation  # noqa: E731
                try:
                    if self.verify_in_process:
                        found = await self._verify_in_child(st, a, stale)
                    else:
                        found = await loop.run_in_executor(self.verify_pool, verify, a, stale)
                    a.verified = found
                except Cancelled:
                    self.cancelled_verifications += 1
                    log.debug("verification of %s cancelled by a newer edit", root)
                    continue
                except Exception as exc:  # a verifier bug must not take the editor down
                    log.exception("verifier failed on %s", root)
                    a.verify_error = f"{type(exc).__name__}: {exc}"
                    continue
                if a is st.analysis and st.generation == a.generation and a.verified is not None:
                    self.publish(a)
        finally:
            self._stop_verifier(st)  # this task was cancelled (the server is stopping)
            st.verifying = False
            self._collect_when_idle()

    async def _verify_in_child(self, st: MeshState, a: Analysis, stale) -> list | None:
        """Verify `a` in a forked child (verifier_process.py): forked once the
        check thread is idle, killed by the next edit (`touch`) or when it is
        found stale here."""
        if not self.verifier_loaded:  # once, so that no child imports it again (about 0.1 s each)
            await self._on_check_thread(_load_verifier)
            self.verifier_loaded = True
        while self.check_jobs:  # never fork while the check thread may hold a lock
            await asyncio.sleep(0.005)
        if stale():
            raise Cancelled
        st.verifier = child = VerifierProcess(lambda analysis: verify(analysis, stale), a)
        try:
            while True:
                try:
                    return await asyncio.wait_for(asyncio.shield(child.future), 0.05)
                except asyncio.TimeoutError:
                    if stale():  # an edit kills it at once (touch); this catches any other way
                        child.cancel()
        finally:
            child.cancel()  # no-op once it has answered; otherwise this task was cancelled
            if st.verifier is child:
                st.verifier = None

    def _stop_verifier(self, st: MeshState) -> None:
        if st.verifier is not None:
            st.verifier.cancel()
            st.stopping = st.verifier

    def stop_verifiers(self) -> None:
        """Kill every verifier child (the server is exiting)."""
        for st in self.meshes.values():
            self._stop_verifier(st)


def _load_verifier() -> None:
    """What meshes.verify imports when it runs (z3 stays lazy: rarely needed)."""
    from .. import triage  # noqa: F401
    from ..gc_pause import gc_paused  # noqa: F401
    from ..verify import (assertions, atoms, auth, callgraph, egress, exposure, limits,  # noqa: F401
                          mtls, partition, raw_paths, routes)


def _range_key(r: lsp.Range) -> tuple[int, int, int, int]:
    return (r.start.line, r.start.character, r.end.line, r.end.character)


def _source(a: Analysis, path: str) -> SourceFile | None:
    return a.sources.get(path)


def make_server(debounce_ms: int = DEFAULT_DEBOUNCE_MS, run_verifier: bool = True) -> MeshLanguageServer:
    server = MeshLanguageServer(debounce_ms, run_verifier)

    @server.feature(lsp.INITIALIZE)
    def initialize(ls: MeshLanguageServer, params: lsp.InitializeParams):
        use_lsp_line_ends(ls.workspace)  # pygls created it just before this handler
        opts = params.initialization_options if isinstance(params.initialization_options, dict) else {}
        if isinstance(opts.get("docsUrl"), str):
            ls.docs_url = opts["docsUrl"]
        if isinstance(opts.get("debounceMs"), int):
            ls.debounce = opts["debounceMs"] / 1000
        if isinstance(opts.get("verify"), bool):
            ls.run_verifier = opts["verify"]
        if isinstance(opts.get("verifyDelayMs"), int):
            ls.verify_delay = opts["verifyDelayMs"] / 1000
        if opts.get("verifyIn") in ("process", "thread"):  # "thread": as before 2026-12-07 (benchmarks)
            ls.verify_in_process = FORK and opts["verifyIn"] == "process"

    @server.feature(lsp.TEXT_DOCUMENT_DID_OPEN)
    async def did_open(ls: MeshLanguageServer, params: lsp.DidOpenTextDocumentParams):
        uri = params.text_document.uri
        st = ls.meshes.get(root_of(path_of(uri)))
        if st is not None:
            st.sent.pop(uri, None)  # a client may have dropped a closed document's diagnostics: send them
        ls.touch(uri)

    @server.feature(lsp.TEXT_DOCUMENT_DID_CHANGE)
    async def did_change(ls: MeshLanguageServer, params: lsp.DidChangeTextDocumentParams):
        ls.carry_findings(params)
        ls.touch(params.text_document.uri)

    @server.feature(lsp.TEXT_DOCUMENT_DID_SAVE)
    async def did_save(ls: MeshLanguageServer, params: lsp.DidSaveTextDocumentParams):
        ls.touch(params.text_document.uri)

    @server.feature(lsp.TEXT_DOCUMENT_DID_CLOSE)
    async def did_close(ls: MeshLanguageServer, params: lsp.DidCloseTextDocumentParams):
        uri = params.text_document.uri
        if not Path(path_of(uri)).is_absolute():  # an unsaved buffer: nothing is left of it
            ls.forget(path_of(uri))
            ls.text_document_publish_diagnostics(lsp.PublishDiagnosticsParams(uri=uri, diagnostics=[]))
            return
        root = root_of(path_of(uri))
        if any(root_of(path_of(u)) == root for u in ls.workspace.text_documents):
            ls.touch(uri)  # the file on disk takes the buffer's place
        else:
            ls.forget(root)  # nothing of the mesh is open any more

    @server.feature(lsp.INITIALIZED)
    async def initialized(ls: MeshLanguageServer, params: lsp.InitializedParams):
        await ls.watch_files()

    @server.feature(lsp.WORKSPACE_DID_CHANGE_WATCHED_FILES)
    async def watched_files_changed(ls: MeshLanguageServer, params: lsp.DidChangeWatchedFilesParams):
        # A file created, changed or deleted outside the editor (git checkout,
        # rm, a meshc.toml edit): every mesh with an open file may change.
        log.debug("%d watched files changed", len(params.changes))
        ls.touch_open_meshes()

    @server.feature(lsp.SHUTDOWN)
    def on_shutdown(ls: MeshLanguageServer, *args):
        ls.shutdown_requested = True

    @server.feature(lsp.TEXT_DOCUMENT_HOVER)
    async def on_hover(ls: MeshLanguageServer, params: lsp.HoverParams):
        a = await ls.current(params.text_document.uri)
        path = path_of(params.text_document.uri)
        src = _source(a, path)
        if src is None:
            return None
        off = offset_at(src, params.position, ls.encoding)
        mesh = a.checked.mesh
        occ = a.index.at(path, off)
        text = None
        if occ is not None:
            svc = mesh.service(occ.symbol[1])
            if svc is None:
                text = f"`{occ.symbol[1]}` is not a declared service"
            elif occ.symbol[0] == "service":
                text = hover.service_hover(mesh, svc)
            else:
                text = hover.version_hover(svc, occ.symbol[2])
            rng = span_range(src, occ.span, ls.encoding)
        else:
            findings = a.verified if a.verified is not None else None
            for r in mesh.auth_rules:
                if r.span.file == path and r.span.contains(off):
                    text, rng = hover.auth_hover(r, findings), span_range(src, r.span, ls.encoding)
            for route in mesh.routes:
                for rr in route.rules:
                    if rr.span.file == path and rr.span.contains(off):
                        text = hover.route_rule_hover(route.service.name, rr, findings)
                        rng = span_range(src, rr.span, ls.encoding)
        if text is None:
            return None
        return lsp.Hover(contents=lsp.MarkupContent(kind=lsp.MarkupKind.Markdown, value=text), range=rng)

    def _location(a: Analysis, span) -> lsp.Location | None:
        src = a.sources.get(span.file)
        return lsp.Location(uri=uri_of(span.file), range=span_range(src, span, server.encoding)) if src else None

    async def _occurrence(ls: MeshLanguageServer, params: lsp.TextDocumentPositionParams):
        """The analysis, and the name (service or version) at the position, if any."""
        a = await ls.current(params.text_document.uri)
        path = path_of(params.text_document.uri)
        src = _source(a, path)
        return a, (a.index.at(path, offset_at(src, params.position, ls.encoding)) if src else None)

    @server.feature(lsp.TEXT_DOCUMENT_DEFINITION)
    async def definition(ls: MeshLanguageServer, params: lsp.DefinitionParams):
        a, occ = await _occurrence(ls, params)
        span = a.index.definition(occ.symbol) if occ else None
        return _location(a, span) if span else None

    @server.feature(lsp.TEXT_DOCUMENT_REFERENCES)
    async def references(ls: MeshLanguageServer, params: lsp.ReferenceParams):
        a, occ = await _occurrence(ls, params)
        if occ is None:
            return []
        spans = a.index.references(occ.symbol, params.context.include_declaration)
        return [loc for s in spans if (loc := _location(a, s)) is not None]

    @server.feature(lsp.TEXT_DOCUMENT_COMPLETION,
                    lsp.CompletionOptions(trigger_characters=[" ", ">", ","]))
    async def completion(ls: MeshLanguageServer, params: lsp.CompletionParams):
        if params.text_document.uri not in ls.workspace.text_documents:
            return None  # completes what the client has open, nothing else
        doc = ls.workspace.get_text_document(params.text_document.uri)
        if len(doc.source) > MAX_FILE_BYTES:
            return None  # not analysed (meshes.py); tokenizing 5 MB up to the cursor takes 8 s
        src = SourceFile(doc.path, doc.source)
        root = root_of(path_of(params.text_document.uri))
        st = ls.state(root)
        a = st.analysis or await ls.current(params.text_document.uri)  # names may lag one edit: fine
        ctx = complete.context_at(doc.source, offset_at(src, params.position, ls.encoding))
        return lsp.CompletionList(is_incomplete=False, items=complete.complete(a.checked.mesh, ctx))

    @server.feature(lsp.TEXT_DOCUMENT_DOCUMENT_SYMBOL)
    async def symbols(ls: MeshLanguageServer, params: lsp.DocumentSymbolParams):
        a = await ls.current(params.text_document.uri)
        src = _source(a, path_of(params.text_document.uri))
        return document_symbols(a.checked.mesh, src, ls.encoding) if src else []

    @server.feature(lsp.TEXT_DOCUMENT_CODE_ACTION,
                    lsp.CodeActionOptions(code_action_kinds=[lsp.CodeActionKind.QuickFix]))
    async def code_actions(ls: MeshLanguageServer, params: lsp.CodeActionParams):
        """Fixes for the diagnostics the client asks about (context.diagnostics),
        each matched to a finding of the current analysis by code and range;
        not every finding that overlaps the range (one line may hold several)."""
        asked = [d for d in params.context.diagnostics if d.source in (None, "meshc") and d.code]
        if not asked:
            return []
        a = await ls.current(params.text_document.uri)
        path = path_of(params.text_document.uri)
        src = _source(a, path)
        if src is None:
            return []
        by_key: dict[tuple, list] = {}
        for d in a.diagnostics:
            if d.fixes and d.span is not None and d.span.file == path:
                by_key.setdefault((d.code, _range_key(span_range(src, d.span, ls.encoding))), []).append(d)
        out = []
        for cd in asked:
            for d in by_key.get((cd.code, _range_key(cd.range)), []):
                for fix in d.fixes:
                    fsrc = a.sources.get(fix.span.file)
                    if fsrc is None:
                        continue
                    edit = lsp.TextEdit(range=span_range(fsrc, fix.span, ls.encoding), new_text=fix.replacement)
                    out.append(lsp.CodeAction(
                        title=fix.title, kind=lsp.CodeActionKind.QuickFix, is_preferred=len(d.fixes) == 1,
                        diagnostics=[cd], edit=lsp.WorkspaceEdit(changes={uri_of(fix.span.file): [edit]})))
        return out

    @server.feature(lsp.TEXT_DOCUMENT_FORMATTING)
    def formatting(ls: MeshLanguageServer, params: lsp.DocumentFormattingParams):
        from ..fmt import format_text

        if params.text_document.uri not in ls.workspace.text_documents:
            return []  # formats what the client has open, nothing else
        doc = ls.workspace.get_text_document(params.text_document.uri)
        if len(doc.source) > MAX_FILE_BYTES:
            return []  # not analysed either (meshes.py)
        new = format_text(doc.source, doc.path).text
        if new is None or new == doc.source:  # syntax errors: left alone, as `meshc fmt` does
            return []
        src = SourceFile(doc.path, doc.source)
        whole = span_range(src, src.span(0, len(src.text)), ls.encoding)
        return [lsp.TextEdit(range=whole, new_text=new)]

    return server


def serve(debounce_ms: int = DEFAULT_DEBOUNCE_MS, run_verifier: bool = True) -> None:
    server = make_server(debounce_ms, run_verifier)
    # Modules, grammar tables and classes live as long as the server: keep
    # the idle collections from re-scanning them.
    gc.collect()
    gc.freeze()
    gc.disable()  # collected when idle (see the module doc)
    try:
        server.start_io()
    finally:
        server.stop_verifiers()
    # The protocol: exit after shutdown is a clean stop (0), anything else is not (1).
    sys.exit(0 if server.shutdown_requested else 1)
