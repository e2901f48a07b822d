"""What machine a process trains on, for the run's record (metrics.json ``spans``): a run continued on
another machine says so, and fp32 speed and rounding depend on the CPU's vector units (AVX-512, AMX) or the
GPU."""
from __future__ import annotations

import functools
import os
import platform
import socket
from pathlib import Path

import torch

CPU_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx")  # amx: any of amx_tile / amx_bf16 / amx_int8


@functools.lru_cache(None)
def cpu() -> dict:
    """CPU model and the vector flags that matter for training speed (Linux: /proc/cpuinfo)."""
    model, flags = "", set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            key = key.strip()
            if key == "model name" and not model:
                model = value.strip()
            elif key in ("flags", "Features") and not flags:  # Features: ARM
                flags = set(value.split())
    except OSError:
        pass
    found = {flag: (any(f.startswith("amx") for f in flags) if flag == "amx" else flag in flags) for flag in CPU_FLAGS}
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {"cpu": model or platform.processor() or platform.machine(), "cpu_flags": found, "cores": cores}


def machine(device: torch.device | str, world_size: int = 1) -> dict:
    """This process's machine: host, CPU (model, flags, cores), torch and its threads, the GPU if any."""
    device = torch.device(device)
    info = {"host": socket.gethostname(), **cpu(), "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
            "device": str(device), "world_size": world_size}
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info
