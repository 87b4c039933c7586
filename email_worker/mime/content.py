"""The content of an email: its three parts, and the template files they come from.

Kept apart from rendering so that building a message does not import the template
engine, and so that template sources share the file names without importing each other.
"""

from __future__ import annotations

from dataclasses import dataclass

SUBJECT, HTML, TEXT = "subject.txt", "body.html", "body.txt"


@dataclass(frozen=True)
class RenderedEmail:
    """The three parts of an email, ready to be put into a message."""

    subject: str
    text: str
    html: str | None = None
