"""The bearer token of an ``Authorization`` header, strictly parsed."""

from __future__ import annotations

from collections.abc import Mapping

from ..support.errors import CallerAuthenticationError


def bearer_token(headers: Mapping[str, str]) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header; None when there is no such header.

    Raises :class:`CallerAuthenticationError` for a malformed header (wrong scheme, empty, doubled).
    """
    header: str | None = headers.get("authorization")
    if header is None:
        return None
    scheme, _, token = header.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token or " " in token or "," in token:
        raise CallerAuthenticationError(
            "Send the token as 'Authorization: Bearer <token>'.", code="caller_token_malformed"
        )
    return token
