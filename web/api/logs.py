"""Logging: one format for everything, one access line per request, no forged lines.

Text that comes from a request (a path, a header) can hold CR, LF, escape sequences or
Unicode line separators; written as is, ``/x%0d%0aINJECTED`` would start a log line of the
client's choosing (issue 11, finding 5). :func:`escape_control` writes every character that
is not printable as its Python escape (``\\r``, ``\\x1b``, ``\\u2028``): the access line
escapes what it takes from the request, and :class:`LogFormatter` escapes every message as a
second line of defence. Tracebacks keep their line breaks; they are ours, not the client's.
"""

from __future__ import annotations

import logging

access_log = logging.getLogger("actorchat.access")

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def escape_control(text: str) -> str:
    """``text`` with every non-printable character (controls, line and paragraph
    separators, format characters such as bidi overrides) written as its escape."""
    if text.isprintable():
        return text
    return "".join(
        char if char.isprintable() else char.encode("unicode_escape").decode("ascii")
        for char in text
    )


class LogFormatter(logging.Formatter):
    """A formatter that escapes control characters in the message (not in tracebacks)."""

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802 - logging's name
        record.message = escape_control(record.message)
        return super().formatMessage(record)


def configure_logging(level: str = "INFO") -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(LogFormatter(LOG_FORMAT))
    logging.basicConfig(level=level, handlers=[handler])
    # httpx2 logs every request at INFO with its URL; ours is the access log.
    for noisy in ("httpx", "httpx2", "hypercorn.access"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def log_access(method: str, path: str, status: int, duration_ms: float, log_id: str | None,
               ) -> None:
    """The access line: method, path (control characters escaped), status, duration, and the
    first 8 characters of the session or trace ID (never the prompt or the answer)."""
    if access_log.isEnabledFor(logging.INFO):
        access_log.info("%s %s %d %.1fms %s", escape_control(method), escape_control(path),
                        status, duration_ms, log_id[:8] if log_id else "-")
