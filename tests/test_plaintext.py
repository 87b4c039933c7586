from email_worker.plaintext import html_to_text


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
