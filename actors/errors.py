"""Domain errors: small classes with fields, mapped to HTTP in one table in ``web/api/errors.py``.

Each error has a stable ``type`` (the ``error.type`` a client sees) and a message that is safe
to show: no API key, no prompt text, no stack trace.
"""

from __future__ import annotations

from typing import Any


class ActorChatError(Exception):
    """Base of every error actorchat reports to a client."""

    type: str = "internal_error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class RetryableError(ActorChatError):
    """An error the client may retry after ``retry_after`` seconds."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class SessionBusy(RetryableError):
    """The actor's mailbox is full: refused at once instead of queueing without bound."""

    type = "busy"


class TooManyActors(RetryableError):
    """``actors.max_actors`` are live and none of them is idle enough to be stopped."""

    type = "overloaded"


class ShuttingDown(RetryableError):
    """The actor system is stopping and takes no new work."""

    type = "shutting_down"


class MailboxesFull(RetryableError):
    """The turns waiting in all mailboxes hold ``actors.max_queued_bytes`` already (503)."""

    type = "overloaded"


class SessionGone(RetryableError):
    """The session was deleted or expired (by another instance, over a shared store) since its
    actor here last saw it; nothing was sent upstream. The web layer starts a new session and
    runs the turn there (503 only if that one is gone at once too)."""

    type = "session_gone"


class CallerLeft(ActorChatError):
    """The caller went away: its turn was dropped or cancelled, and nothing was recorded."""

    type = "client_left"


class JobQueueFull(RetryableError):
    """``jobs.max_running`` jobs run and ``jobs.max_queued`` wait already."""

    type = "overloaded"


class ActorStopped(ActorChatError):
    """The actor stopped before it could answer this message."""

    type = "actor_stopped"


class ActorCrashed(ActorChatError):
    """The actor raised an unexpected error while handling this message.

    The actor itself is restarted from the store; the message that crashed it is not retried.
    """

    type = "internal_error"


class JobNotFound(ActorChatError):
    """No job with this trace ID, or its result has expired."""

    type = "not_found"


class IdempotencyConflict(ActorChatError):
    """The Idempotency-Key was used before with a different request body."""

    type = "idempotency_conflict"


class JobTimedOut(ActorChatError):
    """The job ran longer than ``jobs.max_duration_s`` and was cancelled."""

    type = "timeout"


class JobCancelled(ActorChatError):
    """The job was cancelled by its client or by shutdown."""

    type = "cancelled"


class UpstreamError(ActorChatError):
    """Base of the errors that come from the OpenAI-compatible upstream."""

    type = "upstream_error"
    transient = False


class UpstreamNotConfigured(UpstreamError):
    """``upstream.provider = "openai"`` but no API key is set."""

    type = "upstream_not_configured"


class UpstreamRefusedKey(UpstreamError):
    """The upstream answered 401/403: the API key was refused. Never retried."""

    type = "upstream_auth_error"


class UpstreamRejected(UpstreamError):
    """The upstream refused the request itself (400, 404, 422). Never retried."""

    type = "upstream_bad_request"

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


class UpstreamRateLimited(UpstreamError):
    """The upstream answered 429; ``retry_after`` is its Retry-After in seconds, if sent.

    ``rate_limit`` is the request budget the 429 reported (an ``upstream.RateLimitInfo``), if
    any: a 429 with requests still remaining limits this request, not everyone's.
    """

    type = "rate_limited"
    transient = True

    def __init__(
        self, message: str, retry_after: float | None = None, rate_limit: Any = None
    ) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.rate_limit = rate_limit


class UpstreamUnavailable(UpstreamError):
    """The upstream answered 5xx, or the connection failed or dropped."""

    type = "upstream_unavailable"
    transient = True


class UpstreamTimeout(UpstreamError):
    """An attempt passed ``upstream.timeout_s``, or the request passed its overall deadline."""

    type = "upstream_timeout"
    transient = True


class UpstreamCertificateError(UpstreamError):
    """The upstream's TLS certificate failed verification. Never retried: it would fail the
    same way again. ``SSL_CERT_FILE`` names a PEM file of the CA certificates to trust
    (instead of the system's), for an upstream signed by a private CA."""

    type = "upstream_tls_error"
    transient = False


class StoreUnavailable(RetryableError):
    """The store did not answer (Redis down, unreachable or too slow); retry later.

    Raised by a store call instead of the client library's own error. A write that raised it
    may or may not have been applied.
    """

    type = "store_unavailable"
