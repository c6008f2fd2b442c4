"""What an operator may write in a content rule, and how it is compiled. No Django.

Shared by the validation every entry point runs (balancers.validation) and by the
snapshot build (gateway.hotpath.snapshot), so a pattern the wizard accepts is the
pattern the gateway runs, compiled the same way.

Regular expressions are compiled by RE2 (the google-re2 package), not Python's
`re`: RE2 matches in time linear in the text for every pattern, with no
backtracking, so no pattern an operator types — `(a+)+$` included — can stall the
event loop on a hostile prompt. The price is RE2's syntax: no backreferences and
no lookaround, which the refusal message says. Two more bounds: a pattern is at
most MAX_PATTERN_CHARS long, and its compiled program must fit in RE2_MAX_MEM
(RE2 refuses larger ones, e.g. deeply nested counted repetitions).

Keywords are compiled by us into one RE2 pattern of escaped literals.
"""

from __future__ import annotations

import re
from typing import Any

import re2

MAX_PATTERN_CHARS = 500
RE2_MAX_MEM = 1 << 20  # bytes for the compiled program; RE2's own default is 8 MiB
MAX_KEYWORDS = 50
MAX_KEYWORD_CHARS = 100
MAX_TOKENS = 10_000_000


class RuleSyntaxError(ValueError):
    """A rule parameter the gateway cannot run; the message is for the operator."""


def _re2_options() -> Any:
    options = re2.Options()
    options.max_mem = RE2_MAX_MEM
    options.log_errors = False  # the refusal reaches the operator; nothing for the log
    return options


_OPTIONS = _re2_options()


def compile_pattern(pattern: str) -> Any:
    """A regular expression compiled by RE2 (linear-time matching), or RuleSyntaxError."""
    if not pattern:
        raise RuleSyntaxError("Write the regular expression to look for.")
    if len(pattern) > MAX_PATTERN_CHARS:
        raise RuleSyntaxError(f"A pattern is at most {MAX_PATTERN_CHARS} characters.")
    try:
        return re2.compile(pattern, _OPTIONS)
    except re2.error as exc:
        detail = exc.args[0] if exc.args else ""
        if isinstance(detail, bytes):
            detail = detail.decode("utf-8", "replace")
        raise RuleSyntaxError(
            f"Not a pattern the gateway can run ({detail or 'invalid'}). Content rules use RE2 "
            "syntax, which "
            "matches in linear time: no backreferences, no lookahead or lookbehind, repetition "
            "counts up to 1000."
        ) from None


def parse_keywords(text: str) -> tuple[str, ...]:
    """Keywords as written, separated by commas or new lines: trimmed, case-folded, without
    repeats."""
    seen: dict[str, None] = {}
    for part in re.split(r"[,\n]", text or ""):
        word = " ".join(part.split()).casefold()
        if word:
            seen[word] = None
    keywords = tuple(seen)
    if not keywords:
        raise RuleSyntaxError("List one or more keywords, separated by commas.")
    if len(keywords) > MAX_KEYWORDS:
        raise RuleSyntaxError(f"At most {MAX_KEYWORDS} keywords per rule.")
    long = [k for k in keywords if len(k) > MAX_KEYWORD_CHARS]
    if long:
        raise RuleSyntaxError(f"A keyword is at most {MAX_KEYWORD_CHARS} characters.")
    return keywords


def compile_keywords(keywords: tuple[str, ...]) -> Any:
    """Any of the keywords as a whole word or phrase, ignoring case (`refund` matches "Refund?",
    not "refunded"); spaces inside a phrase match any run of white space.

    Compiled by RE2 too (about five times faster than the same search with `re` on a 200-word
    prompt), with word edges spelled out as "not a letter, digit or underscore" in Unicode: RE2's
    `\\b` only knows ASCII letters, so it would not see the end of "café".
    """
    edge = r"[^\pL\pN_]"
    alternatives = "|".join(r"\s+".join(re.escape(w) for w in k.split(" ")) for k in keywords)
    return re2.compile(rf"(?i)(?:^|{edge})(?:{alternatives})(?:{edge}|$)", _OPTIONS)


def check_token_range(min_tokens: int | None, max_tokens: int | None) -> None:
    if min_tokens is None and max_tokens is None:
        raise RuleSyntaxError("Give a minimum, a maximum or both.")
    for bound in (min_tokens, max_tokens):
        if bound is not None and not 0 <= bound <= MAX_TOKENS:
            raise RuleSyntaxError(f"Token counts run from 0 to {MAX_TOKENS:,}.")
    if min_tokens is not None and max_tokens is not None and min_tokens > max_tokens:
        raise RuleSyntaxError("The minimum is larger than the maximum.")
