"""The console: server-rendered pages for operators and support staff, under ``/console``.

Each page family has its router: the emails (search and a job's page), the actions on
them (resend, cancel, suppressions, bulk sends, the audit log), the accounts (sign-in and
sign-out), the templates, the overview, and the admin's pages (users and API keys).
:func:`install` mounts them on the app with the handler that answers a refusal as a page
(a redirect to sign-in, or an error page).
"""

from __future__ import annotations

from fastapi import APIRouter, FastAPI

from email_worker.web.console import (
    accounts,
    actions,
    admin_pages,
    assets,
    emails,
    overview,
    template_pages,
)
from email_worker.web.console.accounts import REFUSALS, refusal_response
from email_worker.web.console.pages import ConsoleHeaders

router = APIRouter(prefix="/console", include_in_schema=False)
router.include_router(assets.router)
router.include_router(accounts.router)
router.include_router(emails.router)
router.include_router(actions.router)
router.include_router(template_pages.router)
router.include_router(overview.router)
router.include_router(admin_pages.router)


def install(app: FastAPI) -> None:
    """Mount the console on ``app``, with the page that answers a refusal."""
    app.include_router(router)
    app.add_middleware(ConsoleHeaders)
    for refusal in REFUSALS:
        app.add_exception_handler(refusal, refusal_response)
