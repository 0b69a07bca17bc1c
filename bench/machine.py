"""The processor a benchmark ran on, for the records in ``bench/results/``."""

from __future__ import annotations

import platform
from pathlib import Path

__all__ = ["cpu_model"]


def cpu_model(default: str | None = None) -> str:
    """The CPU's model name from ``/proc/cpuinfo``; ``default`` (or the platform's processor) elsewhere."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return default if default is not None else (platform.processor() or platform.machine())
