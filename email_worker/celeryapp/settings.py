"""Celery settings of email-worker, derived from its own settings.

The app loads this module by its full name, so a ``celeryconfig`` module or a
``CELERY_CONFIG_MODULE`` of the service that imports the package is never read.
Change behaviour through the environment or ``config.yaml`` (see the README), not
here: this module only translates those settings into Celery's names.
"""

from kombu import Queue

from email_worker.config import HARD_LIMIT_MARGIN, get_settings
from email_worker.kinds import PRIORITIES
from email_worker.redis_client import (
    is_redis_url,
    is_sentinel_url,
    redis_url,
    sentinel_kwargs,
    settings_redis_url,
)

_settings = get_settings()
# What only workers and beat use: a producer never reads it, so a wrong value (a host's
# WORKER_COUNT=auto) must not stop it loading this module; workers and beat refuse it.
_own = _settings.with_defaults_for_refused()
_queues = _settings.queues
_timeout = _settings.broker_timeout


broker_url = _settings.broker_url.reveal() or settings_redis_url(_settings)
_on_sentinel = is_sentinel_url(broker_url)
if _on_sentinel:
    broker_url = redis_url(_settings)  # the master's credentials and database on every Sentinel
_on_redis = is_redis_url(broker_url)
_on_rabbitmq = broker_url.startswith(("amqp://", "amqps://", "pyamqp://"))
# Celery lets CELERY_BROKER_URL win over broker_url, but not over these: that variable
# belongs to the Celery app of the service this package runs in.
broker_read_url = broker_write_url = broker_url
result_backend = _settings.result_backend.reveal() or (
    (broker_url if _on_sentinel else settings_redis_url(_settings)) if _on_redis else None
)
broker_connection_retry_on_startup = True
broker_connection_timeout = _timeout
# A publish to a broker that does not answer fails after one more try, each bounded by
# BROKER_TIMEOUT, instead of holding the producer's request.
task_publish_retry_policy = {
    "max_retries": 1,
    "interval_start": 0,
    "interval_step": 0.5,
    "interval_max": 0.5,
}
broker_transport_options: dict[str, object]
if _on_rabbitmq:
    # RabbitMQ gives a message back as soon as the connection of the worker holding it
    # closes, so there is no visibility timeout; queues are consumed together, not in
    # order. A publish returns once RabbitMQ has taken the message (publisher confirms):
    # on the fast path the broker is the only copy of an email.
    broker_transport_options = {"confirm_publish": True}
else:
    broker_transport_options = {
        # Consume the queues in the order declared: high, then default, then low.
        "queue_order_strategy": "priority",
        "visibility_timeout": _own.visibility_timeout,
    }
if _on_redis:
    broker_transport_options.update(
        # A Redis that accepts connections and never answers fails a call, not hangs it.
        socket_timeout=_timeout,
        socket_connect_timeout=_timeout,
        socket_keepalive=True,
        health_check_interval=max(int(_timeout), 1),
        # The messages a killed worker held come back soon after the visibility timeout.
        unacked_restore_interval=5,
        unacked_restore_throttle=1,
    )
    redis_socket_timeout = _timeout
    redis_socket_connect_timeout = _timeout
    redis_socket_keepalive = True
    redis_backend_health_check_interval = max(int(_timeout), 1)
if broker_url.startswith("redis://"):
    import email_worker.celeryapp.redis_transport as _redis_transport

    # kombu's transport, with one Redis client per channel (see the module).
    broker_transport = _redis_transport.TRANSPORT
# Redis through Sentinel: the broker and the results follow the master the Sentinels name.
_through_sentinels = {
    "master_name": _settings.redis_sentinel_master,
    "sentinel_kwargs": sentinel_kwargs(_settings, _timeout),
}
if _on_sentinel:
    import email_worker.celeryapp.redis_transport as _redis_transport

    broker_transport = _redis_transport.SENTINEL_TRANSPORT
    broker_transport_options.update(_through_sentinels)
if is_sentinel_url(result_backend or ""):
    result_backend_transport_options = dict(_through_sentinels)
if broker_url.startswith("filesystem://"):
    _folder = broker_url.removeprefix("filesystem://") or ".email-worker/broker"
    broker_transport_options.update(
        data_folder_in=_folder, data_folder_out=_folder, control_folder=f"{_folder}/control"
    )

# Consumed in this order: beat's few, quick tasks first, then high, default and low.
task_queues = [
    Queue(_settings.periodic_queue, routing_key=_settings.periodic_queue),
    *(Queue(_queues[p], routing_key=_queues[p]) for p in PRIORITIES),
]
task_default_queue = _queues["default"]
task_routes = ("email_worker.celeryapp.app.route_task",)
# Imported by a worker (and beat) as it starts: the modules that declare the tasks, so
# their names are known. Not the task bodies: the worker's main process receives, hands
# out and acknowledges messages and runs no send, so the send path (delivery, bulk, the
# database layer, Jinja2, the database driver) is imported by each pool process with its
# first message. Imported before the fork, each of those pages would be counted in every
# process of the worker; see "Worker memory" in docs/PERFORMANCE.md.
imports = (
    "email_worker.tasks",
    "email_worker.worker.periodic",
    "email_worker.worker.provider_events",
)

task_serializer = "json"
result_serializer = "json"
accept_content = ["json"]
task_ignore_result = True
result_expires = 24 * 3600

# An email is acknowledged only once sent; a worker that dies mid-send gives it back.
task_acks_late = True
task_reject_on_worker_lost = True
worker_prefetch_multiplier = 1
worker_concurrency = _own.worker_count
task_soft_time_limit = _own.process_timeout
task_time_limit = _own.process_timeout + HARD_LIMIT_MARGIN

# Task events cost a publish per task and state change, so they are off until someone
# listens: Flower turns them on in the workers it watches (its --enable_events, the
# default), as does `celery -A email_worker control enable_events`; `worker -E` starts
# with them on. A "sent" event would cost every producer call a second publish.
worker_send_task_events = False
task_send_sent_event = False
task_track_started = True

# Periodic work, run by `celery -A email_worker beat` (see email_worker/worker/periodic.py).
_every = {
    "dispatch_due_jobs": _own.dispatch_interval,
    "relay_stranded_jobs": max(_own.stranded_after / 5, 5.0),
    "reap_expired_leases": 15.0,  # with the lease margin, a lost send goes out within 2 min
    "cleanup_old_jobs": _own.cleanup_interval,
    "apply_pending_events": 15.0,  # events that came before their job (see db/events.py)
    "clear_personal_data": _own.cleanup_interval,  # PERSONAL_DATA_RETENTION (db/retention.py)
}
# A run not started before the next one is due expires: the next one does its work.
beat_schedule = {
    name.replace("_", "-"): {
        "task": f"email_worker.{name}",
        "schedule": seconds,
        "options": {"expires": seconds},
    }
    for name, seconds in _every.items()
}

worker_soft_shutdown_timeout = _own.shutdown_timeout
worker_enable_soft_shutdown_on_idle = True
worker_hijack_root_logger = False
enable_utc = True
timezone = "UTC"
