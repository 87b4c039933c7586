"""The FastAPI application served by ``email-worker web``; each concern has its router."""

from __future__ import annotations

from fastapi import FastAPI

from email_worker import __version__
from email_worker.web import admin, api, console, links, service, webhooks


def create_app() -> FastAPI:
    """The app with every router mounted."""
    app = FastAPI(
        title="email-worker",
        version=__version__,
        description="Send email over HTTP, receive provider webhooks, track and unsubscribe.",
    )
    app.include_router(service.router)  # /health, /metrics
    app.include_router(api.router)  # /v1/emails
    app.include_router(admin.router)  # /v1/admin/erasures
    app.include_router(webhooks.router)  # /webhooks/sendgrid, /webhooks/ses
    app.include_router(links.router)  # /t/o/{token}, /t/c/{token}, /u/{token}
    console.install(app)  # /console: pages for operators and support staff
    return app
