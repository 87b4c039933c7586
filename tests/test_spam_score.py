"""Every built-in template, sent as the worker sends it, trips none of SpamAssassin's content rules.

Each kind is rendered with its sample data into the whole MIME message a worker would hand
to its provider, and scored by ``spamassassin -L -t`` (local tests only: no DNS, no
network). The report lists each rule that fired with its points; none may add points.
SpamAssassin is the Debian package (``.ci/run`` installs it).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from email_worker.kinds import GENERIC, KINDS, get_kind
from email_worker.producer.publishing import check_request
from email_worker.worker.delivery import build_email

NOTICE = {
    "title": "Your export is ready",
    "message": "The export of your bookings is ready.\n\nIt stays available for seven days.",
}
SENDS: list[tuple[str, Any, dict[str, Any]]] = [
    *((kind.name, kind, {"data": dict(kind.sample_data)}) for kind in KINDS),
    *(
        (
            template,
            GENERIC,
            {
                "template_id": template,
                "data": {**NOTICE, "action_url": "https://app.example.com/exports/7"},
            },
        )
        for template in ("generic_notice", "html_only_notice")
    ),
]
# A rule line of the report: points, rule name, description ("-0.0 NO_RELAYS  Informational").
RULE = re.compile(r"^\s*(-?\d+(?:\.\d+)?)\s+([A-Z0-9_]+)\s", re.MULTILINE)


def scored(name: str, kind: Any, fields: dict[str, Any]) -> tuple[str, dict[str, float], str]:
    request = check_request(kind, (), {"to": "ann.lee@example.net", **fields})
    message = build_email(request, message_key=str(uuid.uuid4())).as_bytes()
    done = subprocess.run(
        ["spamassassin", "-L", "-t"], input=message, capture_output=True, timeout=120
    )
    report = done.stdout.decode(errors="replace")
    section = report.split("Content analysis details:", 1)[-1]
    rules = {rule: float(points) for points, rule in RULE.findall(section)}
    return name, rules, report


def test_every_built_in_kind_scores_nothing_on_content_rules() -> None:
    assert shutil.which("spamassassin"), "install SpamAssassin: apt-get install spamassassin"
    assert get_kind("newsletter").category == "marketing"  # its footer and headers are scored too
    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(lambda send: scored(*send), SENDS))
    print(f"\nSpamAssassin scored {len(results)} messages in {time.monotonic() - started:.1f}s")
    fired: dict[str, dict[str, float]] = {}
    for name, rules, report in results:
        assert "Content analysis details" in report and rules, report  # SpamAssassin ran
        points = {rule: p for rule, p in rules.items() if p > 0}
        if points:
            fired[name] = points
    assert fired == {}
