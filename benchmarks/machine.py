"""What a benchmark ran on, recorded beside its numbers: on a shared box the load matters as much
as the hardware, so the load average is taken at call time (call it before and after a run)."""

from __future__ import annotations

import os
import platform
import sys
import time
from pathlib import Path
from typing import Any


def _cpu_model() -> str:
    """The first ``model name`` of /proc/cpuinfo (platform's name where there is none)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _ram_gib() -> float | None:
    """MemTotal of /proc/meminfo in GiB (None off Linux)."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 2**20, 1)
    except (OSError, ValueError, IndexError):
        pass
    return None


def _torch() -> tuple[str, str]:
    """torch's version and the first GPU's name ("none" without CUDA or without torch)."""
    try:
        import torch
    except ImportError:
        return "not installed", "none"
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    return torch.__version__, gpu


def describe() -> dict[str, Any]:
    """CPU, cores, RAM, GPU, torch and Python versions, load average and UTC time, now."""
    torch_version, gpu = _torch()
    return {
        "cpu_model": _cpu_model(),
        "nproc": os.cpu_count(),
        "ram_gib": _ram_gib(),
        "gpu": gpu,
        "torch": torch_version,
        "python": platform.python_version(),
        "executable": sys.executable,
        "loadavg_1_5_15": [round(x, 2) for x in os.getloadavg()],
        "utc": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
    }


if __name__ == "__main__":
    import json

    print(json.dumps(describe(), indent=2))
