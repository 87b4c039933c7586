import time

from email_worker.mime.plaintext import html_to_text


def test_blocks_links_and_lists() -> None:
    html = """<html><head><style>p{color:red}</style><title>T</title></head><body>
    <h1>Welcome</h1><p>Hello <b>Ann</b>,<br>thanks.</p>
    <ul><li>One</li><li>Two</li></ul>
    <p><a href="https://example.com/x">Open</a></p><script>alert(1)</script></body></html>"""
    text = html_to_text(html)
    assert (
        text == "Welcome\n\nHello Ann,\nthanks.\n\n- One\n- Two\n\nOpen (https://example.com/x)\n"
    )


def test_entities_are_decoded() -> None:
    assert html_to_text("<p>Fish &amp; chips &lt;3</p>") == "Fish & chips <3\n"


def test_a_link_whose_text_is_its_address_is_not_repeated() -> None:
    html = (
        '<p>See <a href="https://example.com/x">https://example.com/x</a>'
        ' or <a href="mailto:a@example.com">write</a>.</p>'
    )
    assert html_to_text(html) == "See https://example.com/x or write (mailto:a@example.com).\n"


def test_time_grows_linearly_with_the_number_of_links() -> None:
    def seconds(links: int) -> float:
        html = "<p>" + "".join(f'<a href="https://e.example/{i}">go {i}</a> ' for i in range(links))
        started = time.perf_counter()
        html_to_text(html)
        return time.perf_counter() - started

    seconds(500)  # warm up
    small = min(seconds(2_000) for _ in range(3))
    large = min(seconds(8_000) for _ in range(3))
    assert large < 8 * small, (small, large)  # quadratic would be about 16 times
