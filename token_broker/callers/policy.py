"""Authorization: the roles and scopes a verified caller must have (``CALLER_REQUIRED_ROLES``/``_SCOPES``)."""

from __future__ import annotations

from ..config.callers import CallerSettings
from ..support.errors import CallerForbiddenError
from .caller import Caller


def authorize(caller: Caller, settings: CallerSettings) -> None:
    """Raise :class:`CallerForbiddenError` unless the caller has one of the required roles and scopes."""
    if settings.required_roles and not caller.roles & set(settings.required_roles):
        raise CallerForbiddenError(
            "Your account does not have an app role that allows this. Ask an administrator to assign you "
            "one of the roles this API requires.", code="caller_missing_role",
        )
    if settings.required_scopes and not caller.scopes & set(settings.required_scopes):
        raise CallerForbiddenError(
            "The token was not issued with a scope that allows this; request one of the scopes this API "
            "requires when signing in.", code="caller_missing_scope",
        )
