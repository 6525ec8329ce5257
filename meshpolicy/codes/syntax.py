"""Codes for reading and parsing files (MP0xx)."""

from . import define

CODES = define(
    "syntax",
    ("MP001", "unreadable-input", "error", "a file or directory could not be read",
     "check the path and its permissions; meshc reads UTF-8 `.mesh` files"),
    ("MP002", "syntax-error", "error", "a statement does not follow the grammar",
     "compare the statement with its form in docs/language.md"),
    ("MP003", "unexpected-character", "error", "a character that cannot start any token",
     "remove the character, or quote it inside a string"),
    ("MP004", "unterminated-string", "error", "a string literal is not closed on its line",
     "add the closing `\"`; strings cannot span lines"),
    ("MP005", "misplaced-statement", "error", "a statement stands in a block that does not allow it",
     "move the statement into the block named in the message"),
    ("MP006", "unclosed-block", "error", "a `{` block is never closed",
     "add the missing `}`"),
    ("MP007", "unmatched-brace", "error", "a `}` closes no open block",
     "remove the stray `}`"),
    ("MP008", "bad-literal", "error", "a number, duration, percentage or rate is malformed or out of range",
     "write durations like `250ms`, `2s`, `1m`; percentages like `10%`; rates like `100/s`"),
    ("MP009", "unknown-keyword", "error", "a statement starts with a word that is not a keyword here",
     "use one of the statements the message lists"),
)

CODES.update(define(
    "syntax",
    ("MP010", "repeated-option", "error", "an option is given twice in one statement",
     "keep one of the two; the statement takes each option once"),
))

CODES.update(define(
    "syntax",
    ("MP011", "repeated-setting", "error", "a setting that a block takes once is written twice",
     "keep one; the later one would silently win in hand-written YAML, so meshc refuses"),
))

CODES.update(define(
    "syntax",
    ("MP012", "bad-config", "error", "a meshc.toml setting has the wrong type or an impossible value",
     "see docs/language.md, \"meshc.toml\", for each setting's type and range"),
    ("MP013", "unknown-config-key", "warning", "meshc.toml has a table or key meshc does not know",
     "check the spelling; unknown settings are ignored"),
))

CODES.update(define(
    "syntax",
    ("MP014", "reserved-name", "error", "a service, ingress, jwt provider or external service is named `internet`",
     "rename it: `internet` is the source word for requests that enter through an ingress"),
))
