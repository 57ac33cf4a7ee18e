"""The README's first command: the offline stack starts and serves tokens over HTTP."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest
import requests

from devtools.offline_cli import state_path
from devtools.offline_stack import OfflineStack, OfflineStackError
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


# -- stopping: one serve loop, SIGINT/SIGTERM end it and free the port, a busy port is one line --------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def stop_and_wait(process: subprocess.Popen[str], sig: signal.Signals) -> tuple[int, float]:
    """Send ``sig``; the exit code and how long the process took to exit after it."""
    sent = time.monotonic()
    process.send_signal(sig)
    try:
        code = process.wait(15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        raise AssertionError(f"the offline stack ignored {sig.name} for 15 s") from None
    return code, time.monotonic() - sent


@pytest.mark.parametrize("sig, rounds", [(signal.SIGINT, 20), (signal.SIGTERM, 3)], ids=["SIGINT", "SIGTERM"])
def test_a_signal_stops_the_stack_and_frees_its_port_every_time(sig: signal.Signals, rounds: int) -> None:
    """Each round starts the stack on the same port, so a round whose predecessor kept the port fails to start."""
    port = free_port()
    took: list[float] = []
    for round_ in range(rounds):
        process, lines = start_stack_on(port)
        with requests.Session() as session:  # a keep-alive connection stays open, as a browser's does
            assert session.get(f"http://127.0.0.1:{port}/api/health", timeout=10).status_code == 200
            assert state_path(port).is_file()
            code, seconds = stop_and_wait(process, sig)
        assert process.stdout is not None
        rest = process.stdout.read()
        assert code == 0, f"round {round_}: exit code {code}\n{''.join(lines)}{rest}"
        assert "Traceback" not in rest, rest
        assert not state_path(port).exists(), "the --doctor state file outlived the stack"
        took.append(seconds)
    print(f"{sig.name}: exited after {max(took):.2f} s at most, {sorted(took)[len(took) // 2]:.2f} s median")


def start_stack_on(port: int) -> tuple[subprocess.Popen[str], list[str]]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("POWERBI_", "CALLER_"))}
    process = subprocess.Popen([sys.executable, "-m", "devtools", "--port", str(port)], cwd=ROOT, env=environ,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert process.stdout is not None
    lines: list[str] = []
    for line in process.stdout:
        lines.append(line)
        if line.startswith("Try:"):
            return process, lines
    process.wait()
    raise AssertionError(f"the offline stack did not start on port {port}:\n" + "".join(lines))


def test_a_busy_port_is_one_line_naming_the_port_option() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run([sys.executable, "-m", "devtools", "--port", str(port)], cwd=ROOT,
                                capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert result.stdout == ""
    [line] = result.stderr.splitlines()
    assert f"port {port} is already in use" in line and "--port" in line


def test_the_password_grant_without_port_443_is_refused_at_start() -> None:
    before = dict(os.environ)
    stack = OfflineStack(port=0, grant_type="password", entra_port=0)  # what an unprivileged user gets
    with pytest.raises(OfflineStackError, match=r"password grant cannot work here.*port 443"):
        stack.start()
    assert dict(os.environ) == before
    assert stack.server is None


def test_doctor_runs_against_the_running_stack(stack: list[tuple[subprocess.Popen[str], list[str]]]) -> None:
    stack.append(start_stack())
    port = base_url(stack[0][1]).rpartition(":")[2]
    result = subprocess.run(["bash", "scripts/offline-stack.sh", "--port", port, "--doctor", "--json"], cwd=ROOT,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    checks = {check["check"]: check["status"] for check in json.loads(result.stdout)}
    assert checks["settings"] == "pass" and checks["token"] == "pass", checks
    assert checks["setting:CALLER_AUTH"] == "warn"  # the stack runs anonymous by default
    gone = subprocess.run([sys.executable, "-m", "devtools", "--port", str(free_port()), "--doctor"], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert gone.returncode == 2 and "no offline stack is running" in gone.stderr


def test_the_metrics_summary_moves_with_requests(stack: list[tuple[subprocess.Popen[str], list[str]]]) -> None:
    """``python -m devtools --metrics 0.2``: the SDK in the devtools process, one summary line per interval."""
    stack.append(start_stack("--metrics", "0.2"))
    process, lines = stack[0]
    url = base_url(lines)
    for _ in range(3):
        assert requests.get(f"{url}/api/token", timeout=10).status_code == 200
    assert process.stdout is not None
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if line.startswith("metrics: ") and "requests 3 [200:3]" in line:
            assert "cache hits 67% of 3" in line and "upstream entra 2" in line, line
            return
    raise AssertionError("no metrics line counted the three requests")


def test_the_summary_line_reads_the_brokers_instruments() -> None:
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    from devtools.metrics import summary_line

    reader = InMemoryMetricReader()
    meter = MeterProvider(metric_readers=[reader]).get_meter("test")  # a private provider: not the global one
    assert summary_line(reader.get_metrics_data()).startswith("requests 0 [-] | cache hits -")
    requests_counter = meter.create_counter("token_broker.requests")
    requests_counter.add(2, {"http.response.status_code": 200})
    requests_counter.add(1, {"http.response.status_code": 429})
    lookups = meter.create_counter("token_broker.cache.lookups")
    lookups.add(3, {"token_broker.cache.result": "hit"})
    lookups.add(1, {"token_broker.cache.result": "miss"})
    duration = meter.create_histogram("token_broker.upstream.duration")
    duration.record(0.010, {"token_broker.upstream": "powerbi", "token_broker.upstream.outcome": "success"})
    duration.record(0.030, {"token_broker.upstream": "powerbi", "token_broker.upstream.outcome": "error"})
    meter.create_counter("token_broker.embed_tokens.minted").add(4)
    meter.create_counter("token_broker.rate_limited").add(1)
    assert summary_line(reader.get_metrics_data()) == (
        "requests 3 [200:2 429:1] | cache hits 75% of 4 | upstream powerbi 2 (20 ms mean, 1 failed) | "
        "embed tokens 4 | rate limited 1")


def test_the_redis_option_shares_embed_tokens_through_a_local_redis_server(
        stack: list[tuple[subprocess.Popen[str], list[str]]]) -> None:
    import redis

    stack.append(start_stack("--redis"))
    lines = "".join(stack[0][1])
    url = base_url(stack[0][1])
    match = re.search(r"CACHE_REDIS_HOST=(127\.0\.0\.1):(\d+)", lines)
    assert match and "CACHE_ENCRYPTION_KEY_URI=https://" in lines and "CACHE_REDIS_AUTH=none" in lines, lines
    health = requests.get(f"{url}/api/health", timeout=10).json()
    assert health["sharedCache"] == {"host": f"{match.group(1)}:{match.group(2)}", "auth": "none", "tls": False,
                                     "circuit": "closed"}
    report = "0ff1ce00-0000-4000-8000-0000000e4b3d"
    response = requests.post(f"{url}/api/embed-token", json={"reports": [{"id": report}]}, timeout=10)
    assert response.status_code == 200, response.text
    client = redis.Redis(host=match.group(1), port=int(match.group(2)))
    assert client.keys("tb:embed token:*"), "the embed token is in the local Redis"
    process = stack.pop()[0]
    process.send_signal(signal.SIGINT)
    process.wait(15)
    with pytest.raises(redis.ConnectionError):  # the stack stopped its redis-server
        client.ping()
