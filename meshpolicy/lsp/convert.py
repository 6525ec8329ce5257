"""Spans and diagnostics to LSP shapes.

Spans count code points; LSP counts in the negotiated position encoding
(UTF-16 unless the client offers another), so every column goes through
the SourceFile of the file it belongs to.
"""

from __future__ import annotations

from pathlib import Path

from lsprotocol import types as lsp
from pygls.uris import from_fs_path, to_fs_path
from pygls.workspace import TextDocument, Workspace

from ..diagnostics import Diagnostic, Severity
from ..span import SourceFile, Span, split_lines

_SEVERITY = {
    Severity.ERROR: lsp.DiagnosticSeverity.Error,
    Severity.WARNING: lsp.DiagnosticSeverity.Warning,
    Severity.INFO: lsp.DiagnosticSeverity.Information,
}


class LineEndDocument(TextDocument):
    """pygls's document with lines where LSP (and meshc) end them: CRLF, LF or
    a lone CR. pygls splits with str.splitlines, which also breaks at form
    feed, NEL, U+2028 and others: an incremental edit below such a character
    (in a comment, say) was applied on the wrong line."""

    @property
    def lines(self):
        return tuple(split_lines(self.source, keepends=True))


class LineEndWorkspace(Workspace):
    def _create_text_document(self, doc_uri, source=None, version=None, language_id=None) -> TextDocument:
        return LineEndDocument(doc_uri, source=source, version=version, language_id=language_id,
                               sync_kind=self._sync_kind, position_codec=self._position_codec)


def use_lsp_line_ends(workspace: Workspace) -> None:
    """Make the workspace pygls created at `initialize` hold LineEndDocuments."""
    if type(workspace) is Workspace:
        workspace.__class__ = LineEndWorkspace


def uri_of(path: str) -> str:
    """A file's URI; keys that are already URIs (unsaved buffers) stay as they are."""
    return from_fs_path(path) if Path(path).is_absolute() else path


def path_of(uri: str) -> str:
    """The key a document is known by: its absolute path, or the URI itself when not a file."""
    if uri.startswith("file:"):
        return str(Path(to_fs_path(uri)).resolve())
    return uri


def _col_units(src: SourceFile, line: int, col: int, encoding: str) -> int:
    if encoding == lsp.PositionEncodingKind.Utf8:
        return len(src.line_text(line)[: col - 1].encode("utf-8"))
    if encoding == lsp.PositionEncodingKind.Utf32:
        return col - 1
    return src.utf16_col(line, col)


def position(src: SourceFile, line: int, col: int, encoding: str) -> lsp.Position:
    return lsp.Position(line=max(line - 1, 0), character=_col_units(src, line, col, encoding))


def span_range(src: SourceFile | None, span: Span, encoding: str) -> lsp.Range:
    if src is None or span.line <= 0:
        return lsp.Range(lsp.Position(0, 0), lsp.Position(0, 0))
    return lsp.Range(position(src, span.line, span.col, encoding),
                     position(src, span.end_line, span.end_col, encoding))


def offset_at(src: SourceFile, pos: lsp.Position, encoding: str) -> int:
    """0-based code-point offset of an LSP position."""
    line = pos.line + 1
    if line > src.line_count:
        return len(src.text)
    text = src.line_text(line)
    if encoding == lsp.PositionEncodingKind.Utf8:
        col = len(text.encode("utf-8")[: pos.character].decode("utf-8", errors="ignore")) + 1
    elif encoding == lsp.PositionEncodingKind.Utf32:
        col = min(pos.character, len(text)) + 1
    else:
        col = src.col_from_utf16(line, pos.character)
    return src.offset(line, col)


def code_href(code: str, docs_base: str | None = None) -> str:
    """The documentation link of a code: meshpolicy.codes.doc_url, or the same
    page under docs_base (a mirror, given as the `docsUrl` option)."""
    from ..codes import DOCS_URL, doc_url

    url = doc_url(code)
    return docs_base.rstrip("/") + url[len(DOCS_URL):] if docs_base else url


def to_lsp(d: Diagnostic, sources: dict[str, SourceFile], encoding: str, docs_url: str | None = None,
           fallback: SourceFile | None = None) -> lsp.Diagnostic:
    """One meshc Diagnostic as LSP: code, related information from labels,
    help, notes and witness folded into the message (editors show nothing else)."""
    src = sources.get(d.span.file) if d.span else fallback
    rng = span_range(src, d.span, encoding) if d.span else lsp.Range(lsp.Position(0, 0), lsp.Position(0, 0))
    related = []
    for lb in d.labels:
        lsrc = sources.get(lb.span.file)
        if lsrc is None or lb.span.line <= 0:
            continue
        related.append(lsp.DiagnosticRelatedInformation(
            location=lsp.Location(uri=uri_of(lb.span.file), range=span_range(lsrc, lb.span, encoding)),
            message=lb.message or d.message))
    message = d.message
    if d.witness and isinstance(d.witness.get("request"), str):
        message += f"\nwitness: {d.witness['request']}"
    for note in d.notes:
        message += f"\nnote: {note}"
    if d.help:
        message += f"\nhelp: {d.help}"
    return lsp.Diagnostic(
        range=rng,
        message=message,
        severity=_SEVERITY[d.severity],
        code=d.code,
        code_description=lsp.CodeDescription(href=code_href(d.code, docs_url)),
        source="meshc",
        related_information=related or None,
    )
