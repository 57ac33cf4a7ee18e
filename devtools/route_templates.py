"""Compiler for the ASP.NET route templates of Azure Functions HTTP triggers.

:func:`compile_template` turns a template such as ``api/items/{id:guid}/{*rest}`` into a
:class:`RouteTemplate`: one anchored, case-insensitive regex plus the inline constraints of each
parameter, all resolved up front so that matching a request compiles nothing.
:func:`template_precedence` orders templates the way the host tries them.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["RouteTemplate", "compile_template", "template_precedence"]

_PARAM = re.compile(r"\{(\*{0,2})([^{}:=?*]+)((?::[^:=?{}]+(?:\([^)]*\))?)*)(\?)?(?:=([^{}]*))?\}")
_CONSTRAINT = re.compile(r":([A-Za-z]+)(?:\(([^)]*)\))?")
_HYPHENATED = r"[0-9a-f]{8}(?:-[0-9a-f]{4}){3}-[0-9a-f]{12}"  # Guid.TryParse's N, D, B and P forms:
_GUID = re.compile(rf"^(?:[0-9a-f]{{32}}|{_HYPHENATED}|\{{{_HYPHENATED}\}}|\({_HYPHENATED}\))$", re.IGNORECASE)
_INTEGER = re.compile(r"^[+-]?\d+$")
_NUMBER = re.compile(r"^[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?$")
_ALPHA = re.compile(r"^[A-Za-z]+$")


def _is_long(v: str) -> bool:
    return bool(_INTEGER.match(v)) and -(2**63) <= int(v) < 2**63


_PLAIN_CONSTRAINTS: dict[str, Callable[[str], bool]] = {
    "int": lambda v: bool(_INTEGER.match(v)) and -(2**31) <= int(v) < 2**31,
    "long": _is_long,
    "bool": lambda v: v.lower() in ("true", "false"),
    "guid": lambda v: bool(_GUID.match(v)),
    "alpha": lambda v: bool(_ALPHA.match(v)),
    "double": lambda v: bool(_NUMBER.match(v)),
    "float": lambda v: bool(_NUMBER.match(v)),
    "decimal": lambda v: bool(_NUMBER.match(v)),
    "required": bool,
}
_NUMERIC_CONSTRAINTS: dict[str, tuple[tuple[int, ...], Callable[[list[int]], Callable[[str], bool]]]] = {
    "min": ((1,), lambda n: lambda v: _is_long(v) and int(v) >= n[0]),
    "max": ((1,), lambda n: lambda v: _is_long(v) and int(v) <= n[0]),
    "range": ((2,), lambda n: lambda v: _is_long(v) and n[0] <= int(v) <= n[1]),
    "minlength": ((1,), lambda n: lambda v: len(v) >= n[0]),
    "maxlength": ((1,), lambda n: lambda v: len(v) <= n[0]),
    "length": ((1, 2), lambda n: lambda v: n[0] <= len(v) <= n[-1]),
}


def _constraint(name: str, arg: str | None) -> Callable[[str], bool]:
    """Build the predicate for one ASP.NET inline route constraint (resolved at startup)."""
    if name in _PLAIN_CONSTRAINTS and not arg:
        return _PLAIN_CONSTRAINTS[name]
    if name in _NUMERIC_CONSTRAINTS and arg and re.fullmatch(r"-?\d+(?:,-?\d+)*", arg):
        arities, factory = _NUMERIC_CONSTRAINTS[name]
        numbers = [int(a) for a in arg.split(",")]
        if len(numbers) in arities:
            return factory(numbers)
    if name == "regex" and arg:
        # ASP.NET's regex constraint is case-insensitive and unanchored unless the pattern anchors.
        pattern = re.compile(arg.replace("{{", "{").replace("}}", "}"), re.IGNORECASE)
        return lambda v: pattern.search(v) is not None
    # The real host refuses to start on an unresolvable constraint; fail just as early.
    raise ValueError(f"unsupported route constraint {name!r}{f'({arg})' if arg else ''}")


@dataclass
class _Param:
    name: str
    group: str
    checks: list[Callable[[str], bool]]
    default: str | None


@dataclass(frozen=True)
class RouteTemplate:
    """A compiled template: its regex, its parameters and, per segment, (is_param, -constraints, literal)."""

    regex: re.Pattern[str]
    params: list[_Param]
    sort_key: list[tuple[bool, int, str]]

    def match(self, path: str) -> dict[str, str] | None:
        """The route values of ``path`` (defaults applied), or None when it or a constraint does not match."""
        match = self.regex.match(path)
        if match is None:
            return None
        values: dict[str, str] = {}
        for param in self.params:
            value = match.group(param.group) or param.default
            if value is None:
                continue
            if not all(check(value) for check in param.checks):
                return None
            values[param.name] = value
        return values


def compile_template(template: str) -> RouteTemplate:
    """Compile a full template (prefix included) into one anchored regex plus param checks."""
    segments = template.strip("/").split("/") if template.strip("/") else []
    parts: list[str] = []
    params: list[_Param] = []
    sort_key: list[tuple[bool, int, str]] = []
    for index, segment in enumerate(segments):
        leftover = _PARAM.sub("", segment)  # braces outside parameters: malformed (or escaped, unsupported)
        if not segment or "{" in leftover or "}" in leftover:
            raise ValueError(f"cannot parse segment {segment!r} of route template {template!r}")
        sep = "/" if index else ""
        pieces, pos, first = [], 0, None
        for m in _PARAM.finditer(segment):
            literal = segment[pos : m.start()]
            if literal:
                pieces.append(re.escape(literal))
                first = first or (False, 0, literal)
            stars, name, constraints, optional, default = m.groups()
            if any(p.name.lower() == name.lower() for p in params):
                raise ValueError(f"route template {template!r} repeats parameter {name!r}")
            checks = [_constraint(c.group(1).lower(), c.group(2)) for c in _CONSTRAINT.finditer(constraints or "")]
            param = _Param(name, f"p{len(params)}", checks, default)
            params.append(param)
            first = first or (True, -len(checks), "")
            alone = m.start() == 0 and m.end() == len(segment)
            if stars:
                if not (alone and index == len(segments) - 1):
                    raise ValueError(f"catch-all {{{stars}{name}}} must be the whole last segment of {template!r}")
                # A catch-all swallows the rest of the path, slashes included; empty means absent.
                pieces.append(f"(?:{sep}(?P<{param.group}>.*))?")
                sep = ""
            elif (optional or default is not None) and alone:
                pieces.append(f"(?:{sep}(?P<{param.group}>[^/]+))?")
                sep = ""
            elif optional or default is not None:
                raise ValueError(f"optional parameter {name!r} must be a whole segment in {template!r}")
            else:
                # Greedy groups split complex segments like "{name}.{ext}" at the last literal,
                # which is what ASP.NET's right-to-left complex-segment matching does.
                pieces.append(f"(?P<{param.group}>[^/]+)")
            pos = m.end()
        if segment[pos:]:
            pieces.append(re.escape(segment[pos:]))
            first = first or (False, 0, segment[pos:])
        parts.append(sep + "".join(pieces))
        sort_key.append(first or (False, 0, segment))
    # Literals compare case-insensitively (ASP.NET routing); a trailing slash is tolerated.
    return RouteTemplate(re.compile("^" + "".join(parts) + "/?$", re.IGNORECASE | re.DOTALL), params, sort_key)


def _compare_templates(x: RouteTemplate, y: RouteTemplate) -> int:
    """Order routes like the WebJobs HTTP extension's route builder does before first-match.

    Per segment (looking at its first part): literal before parameter, more inline
    constraints before fewer, literals alphabetically (case-insensitive); a longer
    template wins over its own prefix.
    """
    for a, b in zip(x.sort_key, y.sort_key, strict=False):
        if a[0] != b[0]:
            return 1 if a[0] else -1
        if a[0] and a[1] != b[1]:
            return -1 if a[1] < b[1] else 1
        if not a[0] and a[2].lower() != b[2].lower():
            return -1 if a[2].lower() < b[2].lower() else 1
    return len(y.sort_key) - len(x.sort_key)


# Sort key in the order the host tries templates: ``sorted(templates, key=template_precedence)``.
template_precedence = functools.cmp_to_key(_compare_templates)
