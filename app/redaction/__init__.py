"""Secret redaction: find credentials in source text and replace each with a stable, typed placeholder.

Detection reuses detect-secrets' plugin regexes, entropy maths and heuristic filters, but not its scan
loop: the naive per-line `scan_line` runs every plugin on every line (and its "eager" entropy search
flags plain words such as `system`). Here one pass over the lower-cased text with a trie-shaped regex
of literal needles (`ghp_`, `password`, `eyj`, ...) plus a few literal-prefixed whole-text regexes
finds the few lines that could hold a secret, and only those lines meet the detectors that fired.
Results are cached by a hash of the text (and of the part of the file name that changes the rules).

Deliberate choices (bench/README.md, "redaction", has the figures they were tuned against):
* Public IP addresses (detect-secrets' IPPublicDetector) are not redacted: an address is not a
  credential, and code is full of them.
* High-entropy strings count inside quotes, or as a line of their own that is not part of a data
  block, with extra shape rules (see `entropy._entropy_kind`); hex ones only with no digest, UUID or
  test-vector words nearby (a heading covers its whole table); base64 ones not when they decode to
  an alphabet or counting sequence.
* Keyword assignments follow detect-secrets' per-file-type regexes; unquoted values count only in
  config-like files (YAML, INI, .env, shell, ...), since in code they are variables.
* Test and documentation fixtures are left alone by shape, never by file name
  (`fixtures._fixture_value`): a keyword or URL password that is a word under 8 characters, a
  letters-only value that says it is not real, a value mixing no character classes in an example, a
  URL password mixing no classes on a documentation domain (`example.com`, `.test`), and credentials
  published in standards.
* Regexes of detect-secrets that backtrack badly are rewritten to the same language
  (`spans._hardened`), regexes that would rescan a run from every start are tried once per run
  (`spans._first_in_run`), and long lines are scanned in windows around their triggers: the
  pathological lines in tests/unit/test_redaction.py, which took minutes, now take milliseconds.
* Every look at other lines is bounded and memoised (`lines.ScanLines`): a hex table's heading is
  found by one cursor over the lines, key block walks never reread a line, and a long stretch without
  quotes has only its first few keywords tried as assignments.
* `pragma: allowlist secret` comments are not honoured: they make CI quiet, they do not make a
  secret safe to store.

Layout, one module per detector family; each imports only the modules listed above it, never this one:
* `placeholders`: the `<REDACTED:kind>` placeholder, and the values that stand for no secret.
* `text`, `spans`: character-class tests; regex span finders and the `_Rule` a detector is.
* `lines`: the lines of one scan with a memo of facts per line, so that rules looking at the lines
  around cost O(1) per look: every pass is linear-time in the worst case (tests/unit/test_redaction_cost.py
  counts the work on the adversarial inputs of tests/utils/adversarial_code.py).
* `fixtures`: values of tests and documentation, told apart by shape.
* `entropy`: high-entropy strings (quoted, or bare lines), base64 decoding, hex context.
* `tokens`: vendor tokens (detect-secrets' provider plugins and the formats it lacks).
* `keywords`: keyword assignments, by file type.
* `keys`: private key blocks over several lines.
* `gate`: the needle trie that picks the lines and rules worth running.
* `engine`: the `Redactor` (windows, span merging, the cache) and the process-wide instance.
"""

from app.redaction.engine import LONG_LINE, Finding, RedactionResult, Redactor, default_redactor, redact
from app.redaction.entropy import MIN_ENTROPY_LENGTH, shannon_entropy
from app.redaction.keywords import keyword_regexes
from app.redaction.placeholders import PLACEHOLDER_FORMAT, PLACEHOLDER_RE, is_placeholder_value, placeholder

__all__ = [
    "LONG_LINE",
    "MIN_ENTROPY_LENGTH",
    "PLACEHOLDER_FORMAT",
    "PLACEHOLDER_RE",
    "Finding",
    "RedactionResult",
    "Redactor",
    "default_redactor",
    "is_placeholder_value",
    "keyword_regexes",
    "placeholder",
    "redact",
    "shannon_entropy",
]
