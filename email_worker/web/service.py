"""``/health`` and ``/metrics`` of the web app: the worker's report and exposition."""

from __future__ import annotations

import functools

from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response

from email_worker.config import get_settings
from email_worker.observability.health import HealthCheck
from email_worker.observability.http_server import MetricsText, WorkerCollector, metrics_text

router = APIRouter(tags=["service"])


@functools.cache
def _health() -> HealthCheck:
    from email_worker.celeryapp.app import app
    from email_worker.celeryapp.worker_signals import health_check

    return health_check(app, get_settings())


@functools.cache
def _metrics() -> MetricsText:
    from email_worker.celeryapp.app import app

    # This process's own counters (emails queued and tracked through the API) and the queues.
    return metrics_text(WorkerCollector(app, get_settings()), None)


@router.get("/health", responses={503: {"description": "The broker or the primary is down."}})
def health() -> JSONResponse:
    """The worker's health JSON: 503 when the broker or the primary database is down."""
    status, body = _health().report()
    return JSONResponse(body, status_code=status, headers={"Cache-Control": "no-store"})


@router.get("/metrics", response_class=Response)
def metrics() -> Response:
    """Prometheus text, with the worker's metric names."""
    text, content_type = _metrics()()
    return Response(text, media_type=content_type, headers={"Cache-Control": "no-store"})
