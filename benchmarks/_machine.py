"""The machine line every benchmark prints above its table."""

from __future__ import annotations

import os
import platform


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def describe_machine() -> str:
    """``"CPU: AMD EPYC (2 cores), torch 2.x threads 1, Python 3.x, Linux"``."""
    import torch

    cuda = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    return (
        f"CPU: {cpu_model()} ({os.cpu_count()} cores) - torch {torch.__version__} "
        f"(intra-op threads {torch.get_num_threads()}) - CUDA: {cuda} - "
        f"Python {platform.python_version()} - {platform.system()}"
    )
