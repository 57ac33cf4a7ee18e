"""One line of the doctor's checklist (status, detail, fix) and the helpers every stage uses."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from ..support.errors import BrokerError

Status = Literal["pass", "fail", "warn", "skip"]
OK: Status = "pass"  # named OK: a constant named PASS reads as a password to the linter
FAIL: Status = "fail"
WARN: Status = "warn"
SKIP: Status = "skip"
_EXTENSION_IDS = (("aadTraceId", "Azure AD trace id"), ("powerBiRequestId", "Power BI request id"))


@dataclass(frozen=True)
class Check:
    """One line of the checklist: ``fix`` says what to change (always set for a failure)."""

    check: str
    status: Status
    detail: str
    fix: str | None = None
    code: str | None = None

    def as_dict(self) -> dict[str, str | None]:
        return asdict(self)


def failed(check: str, err: BrokerError, *, hint: str = "") -> Check:
    """A failure from one of the product's errors: its title, its support ids, its detail as the fix."""
    ids = [f"{label} {err.extensions[key]}" for key, label in _EXTENSION_IDS if key in err.extensions]
    detail = err.title + (f" ({'; '.join(ids)})" if ids else "")
    return Check(check, FAIL, detail, err.detail + hint, err.code)


def unverified_claims(token: str) -> dict[str, Any]:
    """A JWT's claims without verifying it (for display only); empty when the token is not a JWT."""
    import jwt

    try:
        claims = jwt.decode(token, options={"verify_signature": False})
    except jwt.PyJWTError:
        return {}
    return claims if isinstance(claims, dict) else {}
