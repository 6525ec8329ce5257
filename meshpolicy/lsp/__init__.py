"""The meshc language server (`meshc lsp`): diagnostics, navigation,
completion and formatting for `.mesh` files over LSP.

Everything here but this file imports pygls/lsprotocol, so only `meshc lsp` loads it.
Modules: `convert` (spans <-> LSP positions, diagnostics), `meshes`
(which files form a mesh, open buffers over disk, analysis), `index`
(definitions and references from the model), `hover`, `complete`,
`symbols`, `server` (the pygls server and its scheduling).
"""

# Wait this long after an edit before re-checking: enough for a burst of
# changes read in one go to coalesce (a burst costs at most two analyses
# anyway: one runs at a time and a stale result is dropped). 2 ms since
# 2026-12-07 (was 5: every edit waited the 3 ms more). Here, not in
# `server`, so that `meshc lsp --help` need not load pygls.
DEFAULT_DEBOUNCE_MS = 2

# Files larger than this are not analysed (their mesh is not checked in the
# editor, docs/editors.md): a 1 MB file takes ~5 s and ~180 MB to check, and
# both grow with its size (a 5 MB file peaked at 844 MB).
MAX_FILE_BYTES = 1_000_000
