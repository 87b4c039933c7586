"""The statuses of an email job and the transitions allowed between them.

Statuses only move forward. ``pending``, ``scheduled`` and ``retrying`` all mean
"not sent yet"; after them come ``sending`` < ``sent`` < ``delivered`` < ``opened``
< ``clicked``. ``bounced``, ``failed``, ``cancelled`` and ``suppressed`` are terminal.

=============  ===================================  =================================
to             from                                 by
=============  ===================================  =================================
pending        (new row), scheduled                 create_job, dispatch_due_jobs
scheduled      (new row)                            create_job
sending        pending, retrying                    claim_job (sets a new claim_token)
retrying       sending (with its claim_token)       mark_retrying
               sending (lease expired)              reap_expired_leases
sent           pending, retrying, sending (with     mark_sent
               its claim_token)
delivered      pending, retrying, sending, sent     record_event
opened         ... and delivered                    record_event
clicked        ... and opened                       record_event
bounced        pending, retrying, sending, sent,    record_event
               delivered
failed         sending (with its claim_token)       mark_failed(claim_token=...)
               pending, scheduled, retrying,        mark_failed (no token),
               sending                              set_aside_job
               sending (lease expired)              reap_expired_leases
cancelled      pending, scheduled                   cancel_job
suppressed     sending (with its claim_token)       mark_suppressed (every recipient
                                                    is on the suppression list)
=============  ===================================  =================================

Fencing: a worker's outcome names the ``claim_token`` its claim got. Once the lease
of a claim is reaped (which clears the token) or the job is claimed again, the old
claim can no longer fail it or schedule a retry of it.

``mark_sent`` and the delivery events also accept the not-sent-yet statuses because
a worker whose lease was reaped may still finish its send, and a provider's webhook
may arrive before the worker has committed ``sent``; recording what happened then
stops a second worker from sending the same email again. A ``sending`` job that
another claim holds stays where it is (the sent message is still recorded as a
tracking row). ``scheduled`` is never claimed directly: a scheduled email reaches a
worker only through ``dispatch_due_jobs``, so no stray or early message can send it
ahead of its time.
"""

from __future__ import annotations

PENDING = "pending"
SCHEDULED = "scheduled"
SENDING = "sending"
RETRYING = "retrying"
SENT = "sent"
DELIVERED = "delivered"
OPENED = "opened"
CLICKED = "clicked"
BOUNCED = "bounced"
FAILED = "failed"
CANCELLED = "cancelled"
SUPPRESSED = "suppressed"

ALL = frozenset(
    {PENDING, SCHEDULED, SENDING, RETRYING, SENT, DELIVERED, OPENED, CLICKED}
    | {BOUNCED, FAILED, CANCELLED, SUPPRESSED}
)
INITIAL = frozenset({PENDING, SCHEDULED})
NOT_SENT_YET = frozenset({PENDING, SCHEDULED, RETRYING})
CLAIMABLE = frozenset({PENDING, RETRYING})
CANCELLABLE = frozenset({PENDING, SCHEDULED})
FAILABLE = NOT_SENT_YET | {SENDING}
SENDABLE = CLAIMABLE | {SENDING}
TERMINAL = frozenset({BOUNCED, FAILED, CANCELLED, SUPPRESSED})
# Jobs whose delivery attempt is over; retention may delete them.
FINISHED = frozenset({SENT, DELIVERED, OPENED, CLICKED}) | TERMINAL
EVENTS = frozenset({DELIVERED, OPENED, CLICKED, BOUNCED})

_EVENT_ORDER = (SENDING, SENT, DELIVERED, OPENED, CLICKED)


def allowed_before(event: str) -> frozenset[str]:
    """The statuses from which a delivery event may move a job to ``event``."""
    if event == BOUNCED:
        return CLAIMABLE | {SENDING, SENT, DELIVERED}
    if event not in EVENTS:
        raise ValueError(f"not a delivery event: {event!r}")
    return CLAIMABLE | frozenset(_EVENT_ORDER[: _EVENT_ORDER.index(event)])
