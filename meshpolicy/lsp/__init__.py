"""The meshc language server (`meshc lsp`): diagnostics, navigation,
completion and formatting for `.mesh` files over LSP.

Everything here imports pygls/lsprotocol, so only `meshc lsp` loads it.
Modules: `convert` (spans <-> LSP positions, diagnostics), `meshes`
(which files form a mesh, open buffers over disk, analysis), `index`
(definitions and references from the model), `hover`, `complete`,
`symbols`, `server` (the pygls server and its scheduling).
"""
