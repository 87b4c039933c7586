"""The one email every path sends: a subject, ~300 bytes of text, ~600 of HTML, one variable.

The reference task fills ``{name}`` with ``str.format``; email-worker renders the same
text from a template folder whose files use ``{{ name }}``.
"""

from __future__ import annotations

from pathlib import Path

TEMPLATE_ID = "bench_notice"
SUBJECT = "Your booking is confirmed, {name}"
TEXT = (
    "Hello {name},\n\n"
    "Thank you for your booking. Your seats are reserved and your\n"
    "tickets will be sent to this address two days before the event. You can change or\n"
    "cancel the booking from your account page at any time until then.\n\n"
    "If you did not make this booking, reply to this email and we will look into it.\n\n"
    "The Example Bookings team\n"
)
HTML = (
    '<!doctype html>\n<html><body style="font-family: sans-serif; color: #222;">\n'
    '<h1 style="font-size: 20px;">Hello {name},</h1>\n'
    "<p>Thank you for your booking with <strong>Example Bookings</strong>. Your seats are\n"
    "reserved and your tickets will be sent to this address two days before the event.</p>\n"
    "<p>You can change or cancel the booking from\n"
    '<a href="https://bookings.example.com/account">your account page</a>\n'
    "at any time until then.</p>\n"
    '<p style="color: #666; font-size: 12px;">If you did not make this booking, reply to\n'
    "this email and we will look into it.</p>\n"
    "<p>The Example Bookings team</p>\n</body></html>\n"
)
DATA = {"name": "Ann"}
RECIPIENT = "ann@example.com"
SENDER = "noreply@example.com"


def write_template(folder: Path) -> Path:
    """Write the email as a template folder ``<folder>/<TEMPLATE_ID>/`` for TEMPLATES_DIR."""
    target = folder / TEMPLATE_ID
    target.mkdir(parents=True, exist_ok=True)
    for name, text in (("subject.txt", SUBJECT), ("body.txt", TEXT), ("body.html", HTML)):
        (target / name).write_text(text.replace("{name}", "{{ name }}"), encoding="utf-8")
    return folder
