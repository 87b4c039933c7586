"""The console's overview: queues, the last hour's sends and failures, providers, bulk sends.

Anyone signed in may see it. Each part is read on its own (a source that is down is said
on the page, the rest still shows); nothing on it names a recipient.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from email_worker.web.console.accounts import ConsoleUser, Viewer
from email_worker.web.console.overview_data import WINDOW, read_overview
from email_worker.web.console.pages import render

router = APIRouter()


@router.get("/overview")
def overview_page(request: Request, user: ConsoleUser = Viewer) -> Response:
    """Queue depths, sends and failures by kind and provider, circuits, bulk sends."""
    overview = read_overview()
    totals = {
        "sent": sum(row.sent for row in overview.sends.rows),
        "failed": sum(row.failed for row in overview.sends.rows),
        "bounced": sum(row.bounced for row in overview.sends.rows),
    }
    return render(
        request,
        "overview.html",
        {
            "overview": overview,
            "totals": totals,
            "window_minutes": int(WINDOW.total_seconds() // 60),
        },
        user,
    )
