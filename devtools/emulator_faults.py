"""Fault injection, latency knobs and request recording for :class:`~devtools.emulator_server.EmulatorServer`.

:class:`Fault` describes a failure to serve instead of the normal answer, :class:`RecordedRequest` a request
kept for assertions; :class:`FaultInjection` is the thread-safe mixin holding the knobs and the recording.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from devtools.emulator_http import Request

__all__ = ["Fault", "FaultInjection", "FaultKind", "RecordedRequest"]

FaultKind = Literal["response", "reset", "malformed_json", "hang"]


@dataclass(frozen=True)
class Fault:
    """A failure served instead of the normal answer.

    ``response``: answer ``status`` with ``json_body`` and ``headers`` (e.g. ``Retry-After``);
    ``reset``: close the TCP connection with a RST, without answering;
    ``malformed_json``: HTTP 200 whose body is labelled JSON but is not;
    ``hang``: wait ``delay`` seconds (cut short by ``stop()``), then reset the connection.
    """

    kind: FaultKind
    status: int = 503
    json_body: Any = None
    headers: Mapping[str, str] = field(default_factory=dict)
    delay: float = 0.0

    @classmethod
    def http(cls, status: int, json_body: Any = None, headers: Mapping[str, str] | None = None) -> Fault:
        """An HTTP error reply, e.g. ``Fault.http(503, headers={"Retry-After": "2"})``."""
        return cls("response", status, json_body, dict(headers or {}))

    @classmethod
    def reset(cls) -> Fault:
        """Drop the connection without answering."""
        return cls("reset")

    @classmethod
    def malformed_json(cls) -> Fault:
        """Answer 200 with a truncated JSON body."""
        return cls("malformed_json", status=200)

    @classmethod
    def hang(cls, delay: float = 30.0) -> Fault:
        """Stall for ``delay`` seconds, then drop the connection."""
        return cls("hang", delay=delay)


@dataclass(frozen=True)
class RecordedRequest:
    """A received request, kept for assertions. Secrets are kept too: this is a test tool."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: dict[str, Any]
    raw_body: bytes
    timestamp: float
    fault: FaultKind | None = None


@dataclass
class _ArmedFault:
    fault: Fault
    remaining: int | None
    path_prefix: str | None


class FaultInjection:
    """Mixin with the latency and fault knobs and the bounded request recording. Every method is thread-safe."""

    max_recorded_requests = 100_000

    def __init__(self) -> None:
        super().__init__()  # cooperative: a class may combine this mixin with other no-argument bases
        self._knobs_lock = threading.Lock()
        self._latency = 0.0
        self._path_latency: dict[str, float] = {}
        self._faults: list[_ArmedFault] = []
        self._requests: deque[RecordedRequest] = deque()

    @property
    def latency(self) -> float:
        """Seconds added before every response (default 0)."""
        with self._knobs_lock:
            return self._latency

    @latency.setter
    def latency(self, seconds: float) -> None:
        self.set_latency(seconds)

    def set_latency(self, seconds: float, *, path_prefix: str | None = None) -> None:
        """Set the global latency, or the latency of paths starting with ``path_prefix``."""
        with self._knobs_lock:
            if path_prefix is None:
                self._latency = max(0.0, float(seconds))
            else:
                self._path_latency[path_prefix] = max(0.0, float(seconds))

    def inject_fault(self, fault: Fault | int | Literal["reset", "malformed_json", "hang"], *,
                     count: int | None = 1, path_prefix: str | None = None) -> None:
        """Serve ``fault`` to the next ``count`` matching requests (``count=None``: until cleared).

        Faults fire in the order they were queued. ``path_prefix`` restricts a fault to paths starting
        with it. Shorthands: an ``int`` is ``Fault.http(status)``; ``"hang"`` is ``Fault.hang()``.
        """
        if isinstance(fault, int):
            fault = Fault.http(fault)
        elif isinstance(fault, str):
            fault = {"reset": Fault.reset, "malformed_json": Fault.malformed_json, "hang": Fault.hang}[fault]()
        if count is not None and count < 1:
            raise ValueError("count must be a positive integer or None")
        with self._knobs_lock:
            self._faults.append(_ArmedFault(fault, count, path_prefix))

    def clear_faults(self) -> None:
        """Drop queued faults and all latency settings."""
        with self._knobs_lock:
            self._faults.clear()
            self._path_latency.clear()
            self._latency = 0.0

    @property
    def requests(self) -> list[RecordedRequest]:
        """A snapshot of every request received (including those answered with a fault)."""
        with self._knobs_lock:
            return list(self._requests)

    def count(self, path_contains: str = "", **form_filters: Any) -> int:
        """Count recorded requests whose path contains ``path_contains`` and whose body has the given fields."""
        return sum(1 for r in self.requests
                   if path_contains in r.path and all(r.body.get(k) == v for k, v in form_filters.items()))

    def reset_counters(self) -> None:
        """Forget recorded requests."""
        with self._knobs_lock:
            self._requests.clear()

    def _take_fault(self, path: str) -> tuple[Fault | None, float]:
        """The fault (if any) to serve for ``path``, consuming one use of it, and the latency to add."""
        with self._knobs_lock:
            prefixes = [p for p in self._path_latency if path.startswith(p)]
            delay = self._path_latency[max(prefixes, key=len)] if prefixes else self._latency
            for index, armed in enumerate(self._faults):
                if armed.path_prefix is None or path.startswith(armed.path_prefix):
                    if armed.remaining is not None:
                        armed.remaining -= 1
                        if armed.remaining == 0:
                            del self._faults[index]
                    return armed.fault, delay
        return None, delay

    def _record(self, request: Request, fault: Fault | None) -> None:
        """Keep ``request`` (answered with ``fault``, if any) among the latest ``max_recorded_requests``."""
        record = RecordedRequest(request.method, request.path, request.query, dict(request.headers),
                                 request.body_dict(), request.body, time.time(), fault.kind if fault else None)
        with self._knobs_lock:
            self._requests.append(record)
            while len(self._requests) > self.max_recorded_requests:  # bounded memory in long dev/bench runs
                self._requests.popleft()
