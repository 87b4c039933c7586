"""Rewrite an HTML body's links for click tracking and add the open pixel; pure, no I/O.

The HTML is read by the standard library's ``html.parser``, which reports each start
tag with its exact source text and position (and never reports tags inside a comment,
a ``<script>`` or a ``<style>``). Only the source text of ``<a>`` tags whose ``href``
is an http or https URL is replaced, by the same tag written again with every
attribute quoted and escaped; every other byte of the document is kept as it was, so
the rewrite cannot break markup it does not understand.
"""

from __future__ import annotations

import html
from collections.abc import Callable
from html.parser import HTMLParser

_TRACKED_SCHEMES = ("http://", "https://")


def is_web_url(url: str) -> bool:
    """Whether ``url`` is an http or https URL (what a click token may redirect to)."""
    return url.strip().lower().startswith(_TRACKED_SCHEMES)


def pixel_tag(url: str) -> str:
    """The 1x1 image that records an open."""
    return f'<img src="{html.escape(url)}" width="1" height="1" alt="" style="display:block">'


def track_html(body: str, *, click_url: Callable[[str], str | None], pixel_url: str) -> str:
    """The body with tracked links and the pixel before ``</body>`` (or at the end).

    ``click_url`` maps a link's target to its tracking URL, or None to leave it alone.
    """
    return add_pixel(rewrite_links(body, click_url), pixel_url)


def rewrite_links(body: str, click_url: Callable[[str], str | None]) -> str:
    """The body with each ``<a href="http(s)://...">`` pointed at ``click_url(href)``."""
    finder = _AnchorFinder(body)
    pieces: list[str] = []
    done = 0
    for start, source, attrs in finder.anchors:
        if body[start : start + len(source)] != source or start < done:
            continue  # the parser's position is not where the tag is: leave it as written
        href = next((value for name, value in attrs if name == "href"), None)
        if href is None or not is_web_url(href):
            continue
        tracked = click_url(href.strip())
        if tracked is None:
            continue
        pieces += [body[done:start], _anchor(attrs, tracked, source.endswith("/>"))]
        done = start + len(source)
    pieces.append(body[done:])
    return "".join(pieces)


def add_pixel(body: str, pixel_url: str) -> str:
    """The body with the open pixel just before the last ``</body>``, or at its end."""
    at = body.lower().rfind("</body")
    tag = pixel_tag(pixel_url)
    return body + tag if at < 0 else body[:at] + tag + body[at:]


def _anchor(attrs: list[tuple[str, str | None]], href: str, closed: bool) -> str:
    written = []
    for name, value in attrs:
        if name == "href":
            value = href
        written.append(name if value is None else f'{name}="{html.escape(value, quote=True)}"')
    return "<a " + " ".join(written) + (" />" if closed else ">")


class _AnchorFinder(HTMLParser):
    """Collects every ``<a>`` start tag: its offset, source text and attributes."""

    def __init__(self, body: str) -> None:
        super().__init__(convert_charrefs=True)
        self.anchors: list[tuple[int, str, list[tuple[str, str | None]]]] = []
        # html.parser counts lines by LF only; offsets are rebuilt the same way.
        self._line_starts = [0]
        for line in body.split("\n")[:-1]:
            self._line_starts.append(self._line_starts[-1] + len(line) + 1)
        self.feed(body)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._found(tag, attrs)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._found(tag, attrs)

    def _found(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        source = self.get_starttag_text()
        if tag != "a" or source is None:
            return
        line, column = self.getpos()
        self.anchors.append((self._line_starts[line - 1] + column, source, attrs))
