"""Keep secrets and tokens out of log records, and put the request id on each of them.

:func:`install` (once, when the app starts) makes every log record of the process, whatever logger or
library creates it and whenever that logger was created (msal, azure-core, azure-identity, the worker),
carry a final message (and formatted traceback) in which JWTs became ``<jwt sha256:…>`` and registered
secret values ``<redacted>``. Code that reads a secret only registers it (:func:`register_secrets`).
:class:`RedactingFilter` does the same for one handler (the doctor's console).
"""

from __future__ import annotations

import contextvars
import hashlib
import logging
import re
import threading
from collections.abc import Iterable
from typing import Any

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


_install_lock = threading.Lock()


def install() -> None:
    """Redact every log record of this process from now on, at creation (idempotent).

    The record factory is the one place every record passes through, whichever logger creates it and
    whichever handlers (the worker's, a test's, added later) receive it.
    """
    with _install_lock:
        previous = logging.getLogRecordFactory()
        if getattr(previous, "redacting", False):
            return

        def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
            record = previous(*args, **kwargs)
            _FILTER.filter(record)
            return record

        factory.redacting = True  # type: ignore[attr-defined]
        logging.setLogRecordFactory(factory)
