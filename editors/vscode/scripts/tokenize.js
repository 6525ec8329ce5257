// Tokenizes .mesh files with the extension's TextMate grammar, through the
// same engine VS Code uses (vscode-textmate + the Oniguruma regex library).
// Prints {file: [[line, startColumn, endColumn, innermostScope], ...]} as JSON;
// tests/test_lsp_editor_files.py checks the scopes against meshc's own lexer.
"use strict";
const fs = require("fs");
const path = require("path");
const oniguruma = require("vscode-oniguruma");
const textmate = require("vscode-textmate");

async function main(files) {
  const wasm = fs.readFileSync(require.resolve("vscode-oniguruma/release/onig.wasm"));
  await oniguruma.loadWASM(wasm.buffer.slice(wasm.byteOffset, wasm.byteOffset + wasm.byteLength));
  const registry = new textmate.Registry({
    onigLib: Promise.resolve({
      createOnigScanner: (patterns) => new oniguruma.OnigScanner(patterns),
      createOnigString: (s) => new oniguruma.OnigString(s),
    }),
    loadGrammar: async (scopeName) => {
      if (scopeName !== "source.mesh") return null;
      const file = path.join(__dirname, "..", "syntaxes", "mesh.tmLanguage.json");
      return textmate.parseRawGrammar(fs.readFileSync(file, "utf8"), file);
    },
  });
  const grammar = await registry.loadGrammar("source.mesh");
  if (!grammar) throw new Error("the grammar did not load");
  const out = {};
  for (const file of files) {
    const lines = fs.readFileSync(file, "utf8").split(/\r\n|\r|\n/);
    let state = textmate.INITIAL;
    const tokens = [];
    lines.forEach((text, i) => {
      const r = grammar.tokenizeLine(text, state);
      for (const t of r.tokens) {
        const end = Math.min(t.endIndex, text.length);
        if (end > t.startIndex) tokens.push([i + 1, t.startIndex + 1, end + 1, t.scopes[t.scopes.length - 1]]);
      }
      state = r.ruleStack;
    });
    out[file] = tokens;
  }
  process.stdout.write(JSON.stringify(out));
}

main(process.argv.slice(2)).catch((err) => {
  process.stderr.write(`${err.stack || err}\n`);
  process.exit(1);
});
