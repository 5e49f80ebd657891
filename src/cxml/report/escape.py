"""User text made inert for GitHub markdown: no raw HTML, no links, images or @mentions of its own.

Metric, class, report and param names, baseline labels and gate reasons come from the pull
request being reported on, and the comment is posted by a bot the reviewers trust. Everything
such text can do in GitHub-flavoured markdown is turned off where it lands: in running text
(`escape_text`), inside an HTML element (`html_text`), in a code span (`code`, `code_cell`) and as the
destination of a link the report itself makes (`link_destination`).
"""

from __future__ import annotations

import re
from urllib.parse import quote, urlsplit

ZERO_WIDTH_JOINER = "\u200d"
LINE_BREAKS_AND_CONTROLS = re.compile(
    r"[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]+"
)
"""Newlines would end a table row or an HTML block; bidi overrides can disguise what a text says."""
MARKDOWN_PUNCTUATION = re.compile(r"([\\`*\[\]<>|~&$!#]|(?<![^\W_])_|_(?![^\W_]))")
"""Characters that start emphasis, code, links, images, raw HTML, entities, tables, math
(`_` between two letters or digits, as in `f1_macro`, cannot, and is left alone)."""
MENTION_OR_REFERENCE = re.compile(r"([@#])(?=[\w])")
"""`@team` notifies people and `#12` links an issue: GitHub finds both in the rendered text."""


def one_line(text: str) -> str:
    """The text on one line, with line breaks and control characters as spaces."""
    return LINE_BREAKS_AND_CONTROLS.sub(" ", text)


def defang_mentions(text: str) -> str:
    """`@team` and `#12` kept readable but no longer a mention or an issue link (a zero-width joiner)."""
    return MENTION_OR_REFERENCE.sub(rf"\1{ZERO_WIDTH_JOINER}", text)


def escape_text(value: str) -> str:
    """Running markdown text (also a table cell): shows `value` literally, links and mentions nothing."""
    escaped = MARKDOWN_PUNCTUATION.sub(r"\\\1", defang_mentions(one_line(value)))
    # The autolink extension links bare `http://…`, `www.…` and e-mail addresses; an escaped
    # character in the trigger stops it (an e-mail address already lost its `@` above).
    escaped = re.sub(r":(?=//)", r"\\:", escaped)
    return re.sub(r"(?i)\b(www)\.", r"\1\\.", escaped)


def html_text(value: str) -> str:
    """Text inside an HTML element (`<summary>`), where markdown is not rendered but mentions are."""
    cleaned = defang_mentions(one_line(value))
    return (
        cleaned.replace("&", "&amp;")
        .replace("<", "&lt;")
        .replace(">", "&gt;")
        .replace('"', "&quot;")
    )


def code(value: str) -> str:
    """An inline code span showing `value` exactly, however many backticks it holds."""
    content = one_line(value)
    longest = max((len(run) for run in re.findall(r"`+", content)), default=0)
    fence = "`" * (longest + 1)
    stripped_by_commonmark = content.startswith(" ") and content.endswith(" ") and content.strip()
    if not content:
        return "` `"
    if content.startswith("`") or content.endswith("`") or stripped_by_commonmark:
        content = f" {content} "
    return f"{fence}{content}{fence}"


def code_cell(value: str) -> str:
    """A code span inside a table cell: GFM splits cells at every `|`, even in code, unless escaped."""
    return code(value).replace("|", "\\|")


def is_web_url(url: str) -> bool:
    try:
        parts = urlsplit(url)
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and bool(parts.netloc)


def link_destination(url: str) -> str:
    """A URL as a markdown link destination: spaces, `<>` and parentheses cannot end it early."""
    return quote(one_line(url), safe="!#$%&'*+,-./:;=?@[]_~")
