"""Derive a readable plain-text part from an HTML body; pure."""

from __future__ import annotations

import re
import textwrap
from html.parser import HTMLParser

_BLOCKS = {
    "p",
    "div",
    "section",
    "article",
    "header",
    "footer",
    "table",
    "tr",
    "ul",
    "ol",
    "h1",
    "h2",
    "h3",
    "h4",
    "h5",
    "h6",
    "blockquote",
    "pre",
    "hr",
}
_SKIPPED = {"head", "style", "script", "title"}


class _TextExtractor(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._skip_depth = 0
        self._links: list[str | None] = []
        # The last part with visible text, and that part without trailing whitespace:
        # enough to tell what the text ends with without joining it all again.
        self._last_visible = -1
        self._visible_end = ""

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _SKIPPED:
            self._skip_depth += 1
        elif tag in _BLOCKS or tag == "br":
            self._append("\n\n" if tag in _BLOCKS else "\n")
        elif tag == "li":
            self._append("\n- ")
        elif tag in {"td", "th"}:
            self._append("  ")
        elif tag == "a":
            self._links.append(dict(attrs).get("href"))

    def handle_endtag(self, tag: str) -> None:
        if tag in _SKIPPED:
            self._skip_depth = max(0, self._skip_depth - 1)
        elif tag in _BLOCKS:
            self._append("\n\n")
        elif tag == "a" and self._links:
            href = self._links.pop() or ""
            shown = href.startswith(("http://", "https://", "mailto:"))
            if shown and not self._text_ends_with(href):
                self._append(f" ({href})")

    def handle_data(self, data: str) -> None:
        if not self._skip_depth:
            self._append(re.sub(r"\s+", " ", data))

    def _append(self, part: str) -> None:
        if not part:
            return
        self.parts.append(part)
        if not part.isspace():
            self._last_visible = len(self.parts) - 1
            self._visible_end = part.rstrip()

    def _text_ends_with(self, suffix: str) -> bool:
        """Whether the text so far, trailing whitespace aside, ends with ``suffix``.

        Reads only as much of the end as ``suffix`` is long: joining the whole text
        for every link made many links quadratic.
        """
        if len(self._visible_end) >= len(suffix):
            return self._visible_end.endswith(suffix)
        pieces = [self._visible_end]
        size = len(self._visible_end)
        index = self._last_visible - 1
        while size < len(suffix) and index >= 0:
            piece = self.parts[index][size - len(suffix) :]
            pieces.append(piece)
            size += len(piece)
            index -= 1
        return "".join(reversed(pieces)).endswith(suffix)


def html_to_text(html: str, width: int = 72) -> str:
    """Turn HTML into text: blocks become paragraphs, links keep their address."""
    extractor = _TextExtractor()
    extractor.feed(html)
    extractor.close()
    raw = "".join(extractor.parts)
    paragraphs = []
    for block in re.split(r"\n\s*\n", raw):
        lines = [line.strip() for line in block.split("\n")]
        kept = [
            textwrap.fill(
                line,
                width,
                break_long_words=False,
                break_on_hyphens=False,
                subsequent_indent="  " if line.startswith("- ") else "",
            )
            for line in lines
            if line
        ]
        if kept:
            paragraphs.append("\n".join(kept))
    return "\n\n".join(paragraphs) + "\n"
