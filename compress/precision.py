"""Mixed precision: autocast contexts and which precision ``auto`` means on this machine."""

from __future__ import annotations

import contextlib

import torch

from compress.errors import UserError


def autocast(mixed_precision: str, device: torch.device | str = "cpu"):
    """An autocast context for ``bf16`` / ``fp16`` (no-op for ``no``)."""
    device_type = torch.device(device).type
    if mixed_precision == "bf16":
        return torch.autocast(device_type=device_type, dtype=torch.bfloat16)
    if mixed_precision == "fp16":
        return torch.autocast(device_type=device_type, dtype=torch.float16)
    return contextlib.nullcontext()


def fast_bf16() -> bool:
    """True where PyTorch's kernels have native bf16: a GPU, or a CPU with AMX / AVX512-BF16."""
    if torch.cuda.is_available():
        return True
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except Exception:  # noqa: BLE001 - private op may vanish
        return False


def resolve_mixed_precision(requested: str, device: torch.device) -> str:
    """``auto`` -> bf16 where the hardware has fast bf16 (AMX/AVX512-BF16, Ampere+), else fp32."""
    if requested != "auto":
        if requested == "fp16" and device.type == "cpu":
            raise UserError("mixed_precision=fp16 needs a GPU; use bf16 (fast on AMX CPUs) or no")
        return requested
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "bf16" if fast_bf16() else "no"
