"""What the figures were measured on: CPU, cores, Python, MSAL and the platform.

Latency figures mean little without the machine, so the table and the JSON both start with this.
"""

from __future__ import annotations

import os
import platform
import sys
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Machine:
    """A description of the machine and the interpreter the benchmarks ran on."""

    cpu_model: str
    cores: int
    usable_cores: int
    python: str
    msal: str
    azure_functions: str
    platform: str
    #: 1, 5 and 15 minute load averages when the run started: other work on the machine skews timings.
    load_average: tuple[float, float, float] | None = None

    def describe(self) -> str:
        """One line for the table header."""
        usable = "" if self.usable_cores == self.cores else f" ({self.usable_cores} usable)"
        load = "" if self.load_average is None else (
            "; load average at start " + " ".join(f"{value:.2f}" for value in self.load_average))
        return (
            f"{self.cpu_model}, {self.cores} cores{usable}; Python {self.python}; msal {self.msal}; "
            f"azure-functions {self.azure_functions}; {self.platform}{load}"
        )

    def as_dict(self) -> dict[str, Any]:
        """The JSON form."""
        return asdict(self)


def cpu_model(cpuinfo: Path = Path("/proc/cpuinfo")) -> str:
    """The first ``model name`` of ``/proc/cpuinfo``, else what :mod:`platform` knows."""
    try:
        for line in cpuinfo.read_text(encoding="utf-8", errors="replace").splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and value.strip():
                return value.strip()
    except OSError:
        pass  # not Linux: fall through
    return platform.processor() or platform.machine() or "unknown CPU"


def _version(distribution: str) -> str:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return "not installed"


def _usable_cores() -> int:
    # A container or taskset may allow fewer cores than the machine has; that is what the run gets.
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def describe_machine() -> Machine:
    """The machine this process runs on."""
    return Machine(
        cpu_model=cpu_model(),
        cores=os.cpu_count() or 1,
        usable_cores=_usable_cores(),
        python=platform.python_version() + ("" if sys.flags.optimize == 0 else f" -O{sys.flags.optimize}"),
        msal=_version("msal"),
        azure_functions=_version("azure-functions"),
        platform=platform.platform(),
        load_average=os.getloadavg() if hasattr(os, "getloadavg") else None,
    )
