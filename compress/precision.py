"""Mixed precision: autocast contexts and which precision ``auto`` means on this machine.

``MODCOMPRESS_AUTO_PRECISION`` (``no`` | ``bf16``) forces what ``auto`` resolves to on a CPU, so
the test suite can run the same checks as on an AVX2-only machine (fp32) and on an AMX one (bf16)
wherever it runs.
"""

from __future__ import annotations

import contextlib
import os

import torch

from compress.errors import ConfigError, UserError

AUTO_ENV = "MODCOMPRESS_AUTO_PRECISION"


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
    forced = os.environ.get(AUTO_ENV, "").strip().lower()
    if forced:
        if forced not in ("no", "fp32", "bf16"):
            raise ConfigError(f"{AUTO_ENV}: must be no, fp32 or bf16, got {forced!r}; unset it to let auto decide")
        return "bf16" if forced == "bf16" else "no"
    return "bf16" if fast_bf16() else "no"
