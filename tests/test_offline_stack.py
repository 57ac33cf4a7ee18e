"""The README's first command: the offline stack starts and serves tokens over HTTP."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest
import requests

from tests.conftest import ROOT


def start_stack(*args: str) -> tuple[subprocess.Popen[str], list[str]]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("POWERBI_", "CALLER_"))}
    process = subprocess.Popen([sys.executable, "-m", "devtools", "--port", "0", *args], cwd=ROOT, env=environ,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    deadline = time.monotonic() + 60
    assert process.stdout is not None
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        lines.append(line)
        if line.startswith("Try:"):
            lines += [process.stdout.readline() for _ in range(2)]
            return process, lines
    process.kill()
    raise AssertionError("the offline stack did not start:\n" + "".join(lines))


@pytest.fixture
def stack() -> Iterator[list[tuple[subprocess.Popen[str], list[str]]]]:
    started: list[tuple[subprocess.Popen[str], list[str]]] = []
    yield started
    for process, _ in started:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()


def base_url(lines: list[str]) -> str:
    match = re.search(r"function app on (http://\S+)", "".join(lines))
    assert match, lines
    return match.group(1)


def test_the_offline_stack_serves_a_token(stack: list[tuple[subprocess.Popen[str], list[str]]]) -> None:
    stack.append(start_stack())
    url = base_url(stack[0][1])
    response = requests.get(f"{url}/api/token", timeout=10)
    assert response.status_code == 200, response.text
    assert response.json()["tokenType"] == "Bearer"
    assert requests.get(f"{url}/api/health", timeout=10).json()["status"] == "ok"
    assert "<generated>" in "".join(stack[0][1]), "the banner must not print the generated secret"


def test_the_offline_stack_runs_in_jwt_mode(stack: list[tuple[subprocess.Popen[str], list[str]]]) -> None:
    stack.append(start_stack("--caller-auth", "jwt"))
    lines = stack[0][1]
    url = base_url(lines)
    token = re.search(r"Bearer (eyJ[\w.-]+)", "".join(lines))
    assert token, lines
    assert requests.get(f"{url}/api/token", timeout=10).status_code == 401
    response = requests.get(f"{url}/api/token", headers={"Authorization": f"Bearer {token.group(1)}"}, timeout=10)
    assert response.status_code == 200, response.text
