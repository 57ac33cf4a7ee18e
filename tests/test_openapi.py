"""The OpenAPI description (openapi.yaml) is valid, served, and agrees with the routes, the code and the live API.

``python -m tests.test_openapi`` writes token_broker/web/openapi.json (the served copy) from openapi.yaml.
``OPENAPI_FUZZ_EXAMPLES`` sets the generated examples per operation of the schemathesis run (default 25).
"""

from __future__ import annotations

import ast
import copy
import json
import os
import re
import tomllib
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import hypothesis
import jsonschema
import pytest
import referencing
import schemathesis
import yaml
from referencing.jsonschema import DRAFT202012
from schemathesis.config import SchemathesisConfig

from devtools import offline_stack
from devtools.functions_host import FunctionsHost, HostResponse
from devtools.offline_stack import OfflineStack
from tests.conftest import TENANT, Env, assert_problem
from tests.test_docs import problem_codes_in_code
from token_broker import runtime
from token_broker.support import errors
from token_broker.web import handlers
from token_broker.web import openapi as served_openapi

ROOT = Path(__file__).resolve().parents[1]
SPEC_PATH = ROOT / "openapi.yaml"
OPERATION_METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")
SPEC_URI = "urn:powerbi-token-broker:openapi"
PROBLEM_SCHEMA = ("content", "application/problem+json", "schema")
Call = Callable[..., HostResponse]


# -- the description and its served copy ------------------------------------------------------------------


def load_spec() -> dict[str, Any]:
    """openapi.yaml, parsed."""
    loaded = yaml.safe_load(SPEC_PATH.read_text(encoding="utf-8"))
    assert isinstance(loaded, dict)
    return loaded


def render_json(spec: dict[str, Any]) -> str:
    """The served copy's text for ``spec``."""
    return json.dumps(spec, indent=2, ensure_ascii=False) + "\n"


def main() -> None:
    """Regenerate token_broker/web/openapi.json from openapi.yaml."""
    served_openapi.DOCUMENT_PATH.write_text(render_json(load_spec()), encoding="utf-8")
    print(f"wrote {served_openapi.DOCUMENT_PATH.relative_to(ROOT)}")


@pytest.fixture(scope="module")
def spec() -> dict[str, Any]:
    return load_spec()


def walk(node: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[tuple[Any, ...], Any]]:
    """Every (path, value) of a JSON-like tree, the root included."""
    yield path, node
    if isinstance(node, dict):
        for key, value in node.items():
            yield from walk(value, (*path, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from walk(value, (*path, index))


def pointer(path: tuple[Any, ...]) -> str:
    """The JSON pointer of ``path``."""
    return "".join("/" + str(p).replace("~", "~0").replace("/", "~1") for p in path)


def follow(spec: dict[str, Any], node: Any) -> Any:
    """``node`` with local Reference Objects (``{"$ref": "#/..."}``) followed; KeyError when one dangles."""
    return located(spec, node, ())[0]


def located(spec: dict[str, Any], node: Any, at: tuple[Any, ...]) -> tuple[Any, tuple[Any, ...]]:
    """``node`` (found at ``at``) with its references followed, and where it finally is."""
    while isinstance(node, dict) and "$ref" in node:
        ref = str(node["$ref"])
        assert ref.startswith("#/"), f"only local references are used: {ref}"
        at = tuple(part.replace("~1", "/").replace("~0", "~") for part in ref[2:].split("/"))
        node = spec
        for part in at:
            node = node[part]
    return node, at


def validator(spec: dict[str, Any], at: tuple[Any, ...]) -> jsonschema.Draft202012Validator:
    """A JSON Schema 2020-12 validator (formats checked) for the schema at ``at``, resolving the spec's refs."""
    registry: referencing.Registry[Any] = referencing.Registry().with_resource(
        SPEC_URI, DRAFT202012.create_resource(spec))
    return jsonschema.Draft202012Validator({"$ref": f"{SPEC_URI}#{pointer(at)}"}, registry=registry,
                                           format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER)


def test_the_served_copy_is_openapi_yaml(spec: dict[str, Any]) -> None:
    served = json.loads(served_openapi.DOCUMENT_PATH.read_text(encoding="utf-8"))
    assert json.dumps(served, sort_keys=True) == json.dumps(spec, sort_keys=True), (
        "token_broker/web/openapi.json differs from openapi.yaml: run `.venv/bin/python -m tests.test_openapi`")


def test_the_description_is_valid_openapi_3_1(spec: dict[str, Any]) -> None:
    # YAML 1.1 reads an unquoted `200:` as an int, and schemathesis skips validating a document with such keys.
    assert [pointer(p) for p, v in walk(spec) if isinstance(v, dict) and not all(isinstance(k, str) for k in v)] == []
    # A stray comma in a YAML flow mapping makes a key with a null value; the description never uses null.
    assert [pointer(p) for p, v in walk(spec) if v is None] == []
    assert spec["openapi"] == "3.1.0"
    schemathesis.openapi.from_dict(copy.deepcopy(spec)).validate()  # the OpenAPI 3.1 meta-schema
    # That meta-schema does not look inside Schema Objects: check each against JSON Schema 2020-12.
    schemas = [v for p, v in walk(spec) if (p and p[-1] == "schema") or (p[:2] == ("components", "schemas")
                                                                        and len(p) == 3)]
    assert len(schemas) > 20
    for schema in schemas:
        jsonschema.Draft202012Validator.check_schema(schema)
    dangling = []
    for path, value in walk(spec):
        if isinstance(value, dict) and "$ref" in value:
            try:
                follow(spec, value)
            except KeyError:
                dangling.append(f"{pointer(path)} -> {value['$ref']}")
    assert dangling == []


def test_every_example_matches_its_schema(spec: dict[str, Any]) -> None:
    checked = 0
    for path, value in walk(spec):
        if not isinstance(value, dict):
            continue
        if "schema" in value and ("example" in value or "examples" in value):  # media types, parameters, headers
            examples = [value["example"]] if "example" in value else [e["value"] for e in value["examples"].values()]
            for example in examples:
                validator(spec, (*path, "schema")).validate(example)
                checked += 1
        elif path[:2] == ("components", "schemas") and isinstance(value.get("examples"), list):  # JSON Schema's
            for example in value["examples"]:
                validator(spec, path).validate(example)
                checked += 1
    assert checked >= 8


def test_the_version_is_the_project_version(spec: dict[str, Any]) -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    assert spec["info"]["version"] == project["version"]


def test_get_openapi_json_serves_the_document_even_when_the_broker_is_not_configured(
        spec: dict[str, Any], call: Call) -> None:
    runtime.reset()  # and no settings at all (the autouse fixture removed them)
    assert call("GET", "/api/health").status == 503
    response = call("GET", "/api/openapi.json", headers={"x-request-id": "openapi-test"})
    assert_conforms(spec, "/api/openapi.json", "get", response)
    assert response.status == 200
    assert response.header("x-request-id") == "openapi-test"
    assert response.json() == spec
    assert served_openapi.document() is served_openapi.document(), "read once, then served from memory"


# -- the description agrees with the app --------------------------------------------------------------------


def assert_conforms(spec: dict[str, Any], path: str, method: str, response: HostResponse) -> None:
    """The response's status, content type, headers and body are those the description documents."""
    status = str(response.status)
    responses = spec["paths"][path][method]["responses"]
    assert status in responses, f"{method.upper()} {path} answered undocumented {status}"
    documented, at = located(spec, responses[status], ("paths", path, method, "responses", status))
    for name, header in documented.get("headers", {}).items():
        header, header_at = located(spec, header, (*at, "headers", name))
        value = response.header(name)
        if header.get("required"):
            assert value is not None, f"{method.upper()} {path} {status}: no {name} header"
        if value is not None:
            typed: Any = int(value) if header["schema"].get("type") == "integer" else value
            validator(spec, (*header_at, "schema")).validate(typed)
    media_type = (response.header("content-type") or "").split(";")[0]
    assert media_type in documented["content"], f"{method.upper()} {path} {status}: undocumented {media_type}"
    validator(spec, (*at, "content", media_type, "schema")).validate(response.json())


def spec_path(host: FunctionsHost, route: str) -> str:
    """The description's path of a route template (inline constraints such as ``{id:guid}`` dropped)."""
    template = re.sub(r"\{(\*{0,2})([^{}:=?*]+)[^{}]*\}", r"{\2}", route.strip("/"))
    return "/" + "/".join(part for part in (host.route_prefix, template) if part)


def test_paths_and_methods_agree_with_the_indexed_routes(spec: dict[str, Any], host: FunctionsHost, env: Env,
                                                         call: Call) -> None:
    routes = {spec_path(host, function.route): function for function in host.functions}
    assert sorted(routes) == sorted(spec["paths"])
    method_not_allowed = ("components", "responses", "MethodNotAllowed", *PROBLEM_SCHEMA)
    for path, function in routes.items():
        # Registered for every method, so that the broker (not the host) answers the others with 405.
        assert function.methods is None or set(function.methods) >= set(handlers.ALL_METHODS), path
        documented = {m.upper() for m in spec["paths"][path] if m in OPERATION_METHODS}
        url = re.sub(r"\{[^}]+\}", str(uuid.uuid4()), path)
        answered = set()
        for method in handlers.ALL_METHODS:
            response = call(method, url)
            if response.status == 405:
                problem = assert_problem(response, 405, "method_not_allowed")
                validator(spec, method_not_allowed).validate(problem)
                assert {m.strip() for m in (response.header("allow") or "").split(",")} == documented, path
            else:
                answered.add(method)
                assert_conforms(spec, path, method.lower(), response)
        assert answered == documented, path


def test_the_health_enums_are_the_settings_choices(spec: dict[str, Any]) -> None:
    from token_broker.config.bootstrap import CALLER_AUTH_MODES
    from token_broker.config.clouds import CLOUD_NAMES
    from token_broker.config.contract import GRANT_TYPES

    health = spec["components"]["schemas"]["Health"]["properties"]
    assert set(health["cloud"]["enum"]) == set(CLOUD_NAMES)
    assert set(health["grantType"]["enum"]) == set(GRANT_TYPES)
    assert set(health["callerAuth"]["enum"]) == set(CALLER_AUTH_MODES)


ANSWERS = {  # settings (over the defaults), request -> the documented answer it must get
    "malformed bearer": ({}, ("GET", "/api/token", {"headers": {"Authorization": "Basic eA=="}}), 401),
    "missing bearer (jwt)": ({"CALLER_AUTH": "jwt", "CALLER_JWT_AUDIENCE": "api://broker"},
                             ("GET", "/api/token", {}), 401),
    "wrong secret": ({"POWERBI_CLIENT_SECRET": "not-the-secret"}, ("GET", "/api/token", {}), 502),
    "rate limited": ({"CALLER_RATE_LIMIT_PER_MINUTE": "1"}, ("GET", "/api/token", {}), 429),
    "caller auth unset": ({"CALLER_AUTH": None}, ("POST", "/api/embed-token", {"json": {}}), 503),
    "settings invalid": ({"POWERBI_CLIENT_ID": "x"}, ("GET", "/api/health", {}), 503),
    "embedding off": ({}, ("GET", f"/api/reports/{uuid.uuid4()}/embed?workspaceId={uuid.uuid4()}", {}), 503),
    "no workspace": ({}, ("GET", f"/api/reports/{uuid.uuid4()}/embed", {}), 400),
    "not allowed workspace": ({"EMBED_ALLOWED_WORKSPACES": str(uuid.uuid4())},
                              ("POST", "/api/embed-token", {"json": {"reports": [{"id": str(uuid.uuid4())}],
                                                                     "workspaceId": str(uuid.uuid4())}}), 403),
    "body too large": ({}, ("POST", "/api/token", {"json": {"x": "y" * 70_000}}), 413),
    "not json": ({}, ("POST", "/api/embed-token", {"body": b"reports", "headers": {"Content-Type": "text/plain"}}),
                 415),
}


@pytest.mark.parametrize("name", sorted(ANSWERS))
def test_error_answers_conform_to_the_description(name: str, spec: dict[str, Any], env: Env, call: Call) -> None:
    settings, (method, url, request), status = ANSWERS[name]
    if settings.get("CALLER_AUTH") == "jwt":
        settings = {**settings, "CALLER_JWT_ISSUER": env.entra.issuer(TENANT)}
    env.set(**settings)
    response = call(method, url, **request)
    if status == 429:
        response = call(method, url, **request)
    assert response.status == status, response.text
    path = next(p for p in spec["paths"] if re.fullmatch(re.sub(r"\{[^}]+\}", "[^/]+", p), url.split("?")[0]))
    assert_conforms(spec, path, method.lower(), response)


# -- problem codes --------------------------------------------------------------------------------------------


def documented_codes(spec: dict[str, Any]) -> dict[int, set[str]]:
    """Status -> the codes its problem response lists."""
    by_status: dict[int, set[str]] = {}
    for response in spec["components"]["responses"].values():
        content = response.get("content", {}).get("application/problem+json")
        if content:
            narrowing = content["schema"]["allOf"][1]["properties"]
            by_status[narrowing["status"]["const"]] = set(narrowing["code"]["enum"])
    return by_status


_BROKER_ERRORS = {name: cls for name, cls in vars(errors).items()
                  if isinstance(cls, type) and issubclass(cls, errors.BrokerError)}


def _literal(node: ast.AST | None) -> Any:
    return node.value if isinstance(node, ast.Constant) else None


def raised_codes() -> set[tuple[str, int]]:
    """(code, status) of every error token_broker/ can raise, read from the source.

    Covers the BrokerError classes' defaults, direct constructions of them (literal ``code=``/``status=``
    or the class defaults), helpers that forward a ``code`` parameter to one (its default and the literal
    ``code=`` of each call site: tests/test_docs.py's scan misses those defaults), and Azure AD's
    ``AadErrorRule`` table (``status`` and ``caller_status``).
    """
    found = {(cls.code, cls.status) for cls in _BROKER_ERRORS.values()}
    forwarders: dict[str, int] = {}
    trees = [ast.parse(path.read_text(encoding="utf-8")) for path in sorted((ROOT / "token_broker").rglob("*.py"))]
    for tree in trees:
        for function in (n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)):
            defaults = dict(zip([a.arg for a in function.args.args][-len(function.args.defaults):] or [],
                                function.args.defaults, strict=False))
            defaults |= {a.arg: d for a, d in zip(function.args.kwonlyargs, function.args.kw_defaults, strict=True)}
            for call in (n for n in ast.walk(function) if isinstance(n, ast.Call)):
                name = getattr(call.func, "id", None) or getattr(call.func, "attr", None)
                if name not in _BROKER_ERRORS:
                    continue
                keywords = {k.arg: k.value for k in call.keywords}
                cls = _BROKER_ERRORS[name]
                status = _literal(keywords["status"]) if "status" in keywords else cls.status
                if status is None:
                    continue  # computed (Azure AD's table, below)
                code = keywords.get("code")
                if code is None or _literal(code) is not None:
                    found.add((_literal(code) or cls.code, status))
                elif isinstance(code, ast.Name) and code.id in defaults:
                    forwarders[function.name] = status
                    if _literal(defaults[code.id]) is not None:
                        found.add((_literal(defaults[code.id]), status))
    for tree in trees:
        for call in (n for n in ast.walk(tree) if isinstance(n, ast.Call)):
            name = getattr(call.func, "id", None) or getattr(call.func, "attr", None)
            keywords = {k.arg: _literal(k.value) for k in call.keywords}
            if name in forwarders and keywords.get("code"):
                found.add((keywords["code"], forwarders[name]))
            if name == "AadErrorRule":
                code = _literal(call.args[0])
                found.add((code, keywords.get("status") or 502))
                if keywords.get("caller_status"):
                    found.add((code, keywords["caller_status"]))
    return found


def test_the_scan_sees_helpers_and_tables() -> None:
    codes = raised_codes()
    assert {("invalid_embed_request", 400), ("caller_token_invalid", 401), ("aad_mfa_required", 403),
            ("aad_mfa_required", 502), ("method_not_allowed", 405), ("keyvault_error", 503)} <= codes


def test_every_problem_code_is_documented_once_in_the_problem_code_list(spec: dict[str, Any]) -> None:
    listed = spec["components"]["schemas"]["ProblemCode"]["enum"]
    assert len(listed) == len(set(listed))
    in_code = problem_codes_in_code() | {code for code, _ in raised_codes()}
    assert sorted(in_code - set(listed)) == [], "codes the broker can answer with that openapi.yaml does not list"
    assert sorted(set(listed) - in_code) == [], "codes openapi.yaml lists that the broker no longer has"
    assert set().union(*documented_codes(spec).values()) == set(listed)


def test_every_problem_code_is_listed_under_the_status_it_is_answered_with(spec: dict[str, Any]) -> None:
    by_status = documented_codes(spec)
    missing = sorted(f"{code} ({status})" for code, status in raised_codes() if code not in by_status.get(status, ()))
    assert missing == []


# -- schemathesis against the offline stack, over HTTP ------------------------------------------------------

FUZZ_EXAMPLES = int(os.environ.get("OPENAPI_FUZZ_EXAMPLES", "25"))


# Loaded at import: @parametrize needs the operations at collection time. (schemathesis.pytest.from_fixture would
# load the served copy lazily, but schemathesis 4.32's lazy loader sets `Function._nodeid`, which pytest 9.2 no
# longer has; the served copy equals this document, see test_the_served_copy_is_openapi_yaml.)
live_schema = schemathesis.openapi.from_dict(load_spec(), config=SchemathesisConfig.from_dict({
    "seed": int(os.environ.get("OPENAPI_FUZZ_SEED", "1128")),
    "request-timeout": 15,
    "generation": {"mode": "all", "max-examples": FUZZ_EXAMPLES, "database": "none"},
    # Undeclared methods to try: those the functions are registered for. TRACE is not, so it never reaches the
    # broker (the Functions host answers 404; the dev server 501), and HEAD/OPTIONS schemathesis does not send.
    "phases": {"stateful": {"enabled": False},
               "coverage": {"unexpected-methods": [m for m in handlers.ALL_METHODS if m not in ("HEAD", "OPTIONS")]}},
}))


@pytest.fixture(scope="module")
def _live_stack() -> Iterator[OfflineStack]:
    """The offline stack over HTTP with anonymous callers, so that every endpoint is reachable.

    Its Power BI emulator has a demo workspace, allowed for embedding and the default one; the description's
    example report is added to it so that the examples phase gets real embed tokens.
    """
    with OfflineStack(port=0, caller_auth="anonymous") as stack:
        example_report = load_spec()["components"]["schemas"]["Guid"]["examples"][0]
        stack.powerbi.add_report(offline_stack.WORKSPACE_ID, example_report, name="Example",
                                 dataset_id=offline_stack.DATASET_ID)
        yield stack
    runtime.reset()


@pytest.fixture
def live_url(_live_stack: OfflineStack, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """The stack's URL, with its settings applied for this test (the autouse fixture removes settings)."""
    for name, value in _live_stack.settings().items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", _live_stack.ca.ca_bundle_path)
    runtime.reset()
    yield _live_stack.url
    runtime.reset()


@live_schema.parametrize()
# live_url is set up once per operation on purpose: every example runs against the same stack and settings.
@hypothesis.settings(suppress_health_check=[hypothesis.HealthCheck.function_scoped_fixture])
def test_the_live_api_conforms_to_its_description(case: Any, live_url: str) -> None:
    case.call_and_validate(base_url=live_url)


def test_a_lifetime_of_30_0_minutes_is_30_minutes(env: Env, call: Call) -> None:
    env.set(EMBED_ALLOWED_WORKSPACES=str(uuid.uuid4()))
    body = {"reports": [{"id": str(uuid.uuid4())}], "workspaceId": str(uuid.uuid4()), "lifetimeMinutes": 30.0}
    # Parsed, the request reaches the workspace check (403) before any Power BI call.
    assert_problem(call("POST", "/api/embed-token", json=body), 403, "embed_workspace_not_allowed")


def test_a_blank_json_body_is_malformed(env: Env, call: Call) -> None:
    response = call("POST", "/api/token", body=b" ", headers={"Content-Type": "application/json"})
    assert_problem(response, 400, "malformed_json")


if __name__ == "__main__":
    main()
