"""The logging filter: secrets and JWTs never reach a log record of the broker or MSAL."""

from __future__ import annotations

import logging

import pytest

from token_broker.support import redaction

JWT = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJlLXZhbHVlLWhlcmU"


@pytest.fixture(autouse=True)
def _installed() -> None:
    redaction.register_secrets(["a-registered-secret-value"])
    redaction.install()


@pytest.mark.parametrize("logger_name", ["token_broker.aad.tokens", "msal.application", "token_broker"])
def test_secrets_and_tokens_are_redacted_from_messages(
    caplog: pytest.LogCaptureFixture, logger_name: str
) -> None:
    logger = logging.getLogger(logger_name)
    redaction.install()  # loggers created after the first install (msal's, on import) get the filter too
    with caplog.at_level(logging.DEBUG):
        logger.warning("secret=%s token=%s", "a-registered-secret-value", JWT)
    message = caplog.records[-1].getMessage()
    assert "a-registered-secret-value" not in message and JWT not in message
    assert "<redacted>" in message and "<jwt sha256:" in message


def test_tracebacks_are_redacted(caplog: pytest.LogCaptureFixture) -> None:
    logger = logging.getLogger("token_broker.web.handlers")
    redaction.install()
    try:
        raise ValueError(f"server said {JWT}")
    except ValueError:
        logger.exception("failed")
    record = caplog.records[-1]
    assert record.exc_text and JWT not in record.exc_text and "<jwt sha256:" in record.exc_text


def test_the_request_id_is_added_to_records(caplog: pytest.LogCaptureFixture) -> None:
    logger = logging.getLogger("token_broker.support.cache")
    redaction.install()
    token = redaction.request_id_var.set("req-7")
    try:
        logger.warning("hello")
    finally:
        redaction.request_id_var.reset(token)
    assert caplog.records[-1].request_id == "req-7"  # type: ignore[attr-defined]


def test_short_values_are_not_treated_as_secrets() -> None:
    redaction.register_secrets(["abc"])
    assert redaction.redact("abc and abcdef") == "abc and abcdef"
