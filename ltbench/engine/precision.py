"""Device and precision choice: bf16 autocast wherever the hardware runs it natively."""
from __future__ import annotations

import contextlib
from functools import lru_cache

import torch

from ..errors import ConfigError

PRECISIONS = ("auto", "fp32", "bf16", "fp16")


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError("--device cuda asked for, but torch sees no CUDA GPU; use --device cpu")
    try:
        return torch.device(name)
    except RuntimeError:
        raise ConfigError(f"unknown device '{name}' (use cpu, cuda, cuda:N or auto)") from None


@lru_cache(None)
def cpu_has_native_bf16() -> bool:
    """AVX512-BF16 or AMX: bf16 matmuls/convolutions run natively (faster than fp32) on this CPU."""
    try:
        flags = open("/proc/cpuinfo").read()
    except OSError:
        return False
    return " avx512_bf16" in flags or " amx_bf16" in flags


def resolve_precision(precision: str, device: torch.device) -> str:
    if precision not in PRECISIONS:
        raise ConfigError(f"unknown precision '{precision}' (choose {', '.join(PRECISIONS)})")
    if precision != "auto":
        if precision == "fp16" and device.type != "cuda":
            raise ConfigError("fp16 needs a CUDA GPU; use --precision bf16 or fp32 on CPU")
        return precision
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"  # Ampere on: bf16
    return "bf16" if device.type == "cpu" and cpu_has_native_bf16() else "fp32"


def autocast(device: torch.device, precision: str):
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device.type, dtype=dtype)
