"""Rewriting an HTML body for click tracking: only http(s) links, the markup intact."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from html.parser import HTMLParser
from typing import Any

import pytest

from email_worker.config import reset_settings
from email_worker.kinds import get_kind
from email_worker.producer.publishing import check_request
from email_worker.tracking.links import add_pixel, rewrite_links, track_html
from email_worker.worker.delivery import build_email

PIXEL = "https://t.example.com/t/o/PIX"


def tracked(target: str) -> str | None:
    return (
        None
        if target.startswith("https://t.example.com/u/")
        else f"https://t.example.com/t/c/[{target}]"
    )


def tags(markup: str) -> list[tuple[str, list[tuple[str, str | None]]]]:
    found: list[tuple[str, list[tuple[str, str | None]]]] = []

    class Collect(HTMLParser):
        def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
            found.append((tag, attrs))

    Collect().feed(markup)
    return found


def test_only_http_and_https_links_are_rewritten() -> None:
    body = (
        '<p><a href="https://example.com/a?x=1&amp;y=2" class="btn">A</a>'
        "<a href='http://example.com/b'>B</a>"
        '<a href="mailto:ann@example.com">mail</a><a href="tel:+3312">tel</a>'
        '<a href="#top">top</a><a name="top">anchor</a>'
        '<a href="javascript:alert(1)">js</a>'
        '<a href="https://t.example.com/u/TOKEN">Unsubscribe</a></p>'
    )
    out = rewrite_links(body, tracked)
    hrefs = [dict(attrs).get("href") for tag, attrs in tags(out) if tag == "a"]
    assert hrefs == [
        "https://t.example.com/t/c/[https://example.com/a?x=1&y=2]",
        "https://t.example.com/t/c/[http://example.com/b]",
        "mailto:ann@example.com",
        "tel:+3312",
        "#top",
        None,
        "javascript:alert(1)",
        "https://t.example.com/u/TOKEN",
    ]
    assert 'class="btn"' in out and '<a name="top">anchor</a>' in out


def test_everything_but_the_rewritten_tags_is_kept_byte_for_byte() -> None:
    body = (
        "<!doctype html>\r\n<html><head><style>a{color:red}</style></head>\n<body>\n"
        '<!-- <a href="https://in.comment/"> -->\n'
        "<script>var s='<a href=\"https://in.script/\">';</script>\n"
        '<p>Caf\u00e9 &amp; more <A HREF="https://example.com/x">X</A> after</p>\n'
        '<img src="https://example.com/logo.png" alt="">\n</body></html>'
    )
    out = rewrite_links(body, tracked)
    new_tag = '<a href="https://t.example.com/t/c/[https://example.com/x]">'
    assert out == body.replace('<A HREF="https://example.com/x">', new_tag)


def test_an_href_value_cannot_break_out_of_its_attribute() -> None:
    body = '<a href="https://example.com/?q=&quot;><script>x</script>">go</a>'
    out = rewrite_links(body, lambda target: f"https://t/{target}")
    ((tag, attrs),) = tags(out)
    assert tag == "a" and attrs == [
        ("href", 'https://t/https://example.com/?q="><script>x</script>')
    ]


def test_the_pixel_goes_before_the_body_end_or_at_the_end() -> None:
    pixel = '<img src="https://t.example.com/t/o/PIX" width="1" height="1" alt=""'
    with_body = add_pixel("<html><body><p>x</p></BODY></html>", PIXEL)
    assert with_body.startswith("<html><body><p>x</p>" + pixel)
    assert with_body.endswith("</BODY></html>")
    fragment = add_pixel("<p>x</p>", PIXEL)
    assert fragment.startswith("<p>x</p>" + pixel)


def test_broken_markup_is_left_as_it_was() -> None:
    body = '<p><a href="https://example.com/x"<b>unclosed <a href=https://example.com/y>y'
    out = track_html(body, click_url=tracked, pixel_url=PIXEL)
    assert out.startswith(body[: body.index("<a")])
    assert "https://t.example.com/t/c/[https://example.com/y]" in out


@pytest.fixture
def tracking_on(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("TRACKING_SECRET", "test-tracking-key")
    monkeypatch.setenv("PUBLIC_URL", "https://t.example.com/")
    monkeypatch.setenv("TRACK_OPENS_CLICKS", "true")
    reset_settings()
    yield
    monkeypatch.undo()
    reset_settings()


def built(kind: str, **extra: Any) -> tuple[str, str]:
    request = check_request(
        get_kind(kind), (), {"to": "ann@example.com", "data": sample(kind), **extra}
    )
    message = build_email(request, message_key=str(uuid.uuid4())).message
    html = message.get_body(("html",)).get_content()
    return html, message.get_body(("plain",)).get_content()


def sample(kind: str) -> dict[str, Any]:
    return dict(get_kind(kind).sample_data)


@pytest.mark.usefixtures("tracking_on")
def test_a_newsletter_is_tracked_and_its_text_part_is_unchanged() -> None:
    html, text = built("newsletter")
    assert (
        'href="https://t.example.com/t/c/' in html and 'href="https://app.example.com' not in html
    )
    assert html.count('src="https://t.example.com/t/o/') == 1
    assert html.index("/t/o/") < html.lower().index("</body>")
    assert 'href="https://t.example.com/u/' in html  # the unsubscribe link is left alone
    assert "- Jazz at the Riverside: https://app.example.com/e/jazz" in text


@pytest.mark.usefixtures("tracking_on")
def test_security_kinds_and_opted_out_emails_are_not_tracked() -> None:
    html, _ = built("password_reset")
    assert "/t/c/" not in html and "/t/o/" not in html
    assert "https://app.example.com/reset?token=8d1e77" in html
    html, _ = built("newsletter", metadata={"track_opens_clicks": False})
    assert "/t/c/" not in html and "/t/o/" not in html


def test_without_a_tracking_secret_nothing_is_tracked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRACKING_SECRET", "")
    monkeypatch.setenv("TRACK_OPENS_CLICKS", "true")
    monkeypatch.setenv("DELIVERY_MODE", "outbox")  # live mode refuses such a newsletter
    reset_settings()
    try:
        html, _ = built("newsletter")
    finally:
        monkeypatch.undo()
        reset_settings()
    assert "/t/c/" not in html and "/t/o/" not in html and "/u/" not in html
