"""Keep secrets and tokens out of log records, and put the request id on each of them.

:class:`RedactingFilter` rewrites a record's final message (and its formatted traceback) so that
JWTs become ``<jwt sha256:…>`` and registered secret values become ``<redacted>``. It is attached to
the broker's loggers and to MSAL's, whose error paths may log response bodies.
"""

from __future__ import annotations

import contextvars
import hashlib
import logging
import re
import threading
from collections.abc import Iterable

#: The id of the request being handled, if any; put on every log record as ``request_id``.
request_id_var: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")

# A JWS/JWE compact serialisation: base64url segments separated by dots, starting with '{"' encoded.
_JWT = re.compile(r"eyJ[A-Za-z0-9_-]{4,}(?:\.[A-Za-z0-9_-]*){1,4}")
_MIN_SECRET_LENGTH = 6  # shorter values would redact ordinary words; settings validation rejects them anyway

_secrets: set[str] = set()
_secrets_lock = threading.Lock()
_pattern: re.Pattern[str] | None = None


def register_secrets(values: Iterable[str | None]) -> None:
    """Redact these values from every record passing through a :class:`RedactingFilter`."""
    global _pattern
    with _secrets_lock:
        _secrets.update(v for v in values if v and len(v) >= _MIN_SECRET_LENGTH)
        ordered = sorted(_secrets, key=len, reverse=True)
        _pattern = re.compile("|".join(re.escape(v) for v in ordered)) if ordered else None


def registered_secrets() -> frozenset[str]:
    """Every secret value registered so far, for leak audits (never log or return them)."""
    with _secrets_lock:
        return frozenset(_secrets)


def _jwt_fingerprint(match: re.Match[str]) -> str:
    return "<jwt sha256:" + hashlib.sha256(match.group(0).encode()).hexdigest()[:12] + ">"


def redact(text: str) -> str:
    """``text`` with registered secrets and anything shaped like a JWT removed."""
    pattern = _pattern
    if pattern is not None:
        text = pattern.sub("<redacted>", text)
    return _JWT.sub(_jwt_fingerprint, text)


class RedactingFilter(logging.Filter):
    """A logging filter that redacts the message and traceback and adds ``request_id``."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id_var.get()
        try:
            message = record.getMessage()
        except Exception:  # a broken format string must not break logging
            message = str(record.msg)
        cleaned = redact(message)
        if cleaned != message or record.args:
            record.msg, record.args = cleaned, None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        return True


_FILTER = RedactingFilter()


def install(logger_names: Iterable[str] = ("token_broker", "msal", "devtools")) -> None:
    """Attach the filter to the given loggers and every existing child logger of them.

    Filters run only for records created on the logger they are attached to, so children
    (``msal.application``, ``token_broker.tokens``, ...) each get it too. Safe to call repeatedly.
    """
    prefixes = tuple(logger_names)
    names = [n for n in list(logging.root.manager.loggerDict) if n.split(".")[0] in prefixes]
    for name in (*prefixes, *names):
        logger = logging.getLogger(name)
        if _FILTER not in logger.filters:
            logger.addFilter(_FILTER)
