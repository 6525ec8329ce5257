"""Codes about triage and CI itself: inline suppression comments, and
`meshc fmt --check` findings (MP09x)."""

from . import define

CODES = define(
    "triage",
    ("MP090", "unused-suppression", "info", "a `# meshc: ignore[CODE]` comment suppresses nothing",
     "remove the code from the comment (or the comment): the finding it was written for is gone"),
    ("MP091", "suppression-without-reason", "warning", "a suppression comment does not say why",
     "write the reason after the brackets: `# meshc: ignore[MP552] the batch job retries on purpose`"),
    ("MP092", "unknown-suppressed-code", "error", "a suppression comment names a code meshc does not have",
     "check the spelling; `meshc explain --list` lists every code"),
    ("MP093", "unsuppressible-code", "error", "a suppression comment names a code that is an error by definition",
     "errors cannot be suppressed: fix the finding instead"),
    ("MP094", "malformed-suppression", "warning", "a `# meshc:` comment is not of the form `# meshc: ignore[CODE, ...] reason`",
     "write `# meshc: ignore[MP552] reason`, on the finding's line or the line before it"),
)

CODES.update(define(
    "fmt",
    ("MP095", "not-formatted", "error", "a file is not in meshc's canonical layout",
     "run `meshc fmt` on the file (docs/formatting.md describes the layout)"),
))
