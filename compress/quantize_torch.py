"""PyTorch-side quantization parts: ``torch.ao`` dynamic int8 and the int8 artifact file.

``export.quantize`` runs the guarded recipe for every mode; these are the pieces that only need
PyTorch (``torch-int8-dynamic``), kept in compress beside the models they rewrite.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from compress.errors import ArtifactError

TORCH_INT8_FILE = "model_int8.pt"


@contextlib.contextmanager
def quiet_torch_ao() -> Iterator[None]:
    """torch.ao.quantization warns that it is deprecated (torchao replaces it); it still works."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*torch.ao.quantization is deprecated.*")
        warnings.filterwarnings("ignore", message=".*quantize_per_tensor.*deprecated.*")
        warnings.filterwarnings("ignore", message=".*TypedStorage is deprecated.*")
        yield


def int8_module_names(model: Any, skip_last: int = 0) -> list[str]:
    """Names of the ``nn.Linear`` / ``nn.LSTM`` modules to quantize, leaving out the last ``skip_last`` Linears."""
    import torch

    linears = [n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)]
    keep = set(linears[: len(linears) - skip_last]) if skip_last else set(linears)
    return [n for n, m in model.named_modules()
            if (isinstance(m, torch.nn.Linear) and n in keep) or isinstance(m, torch.nn.LSTM)]


def torch_int8_dynamic(model: Any, module_names: Sequence[str]) -> Any:
    """A dynamically quantized (int8 weights) copy of ``model`` for the named modules (CPU)."""
    import copy

    import torch

    with quiet_torch_ao():
        from torch.ao.quantization import default_dynamic_qconfig, quantize_dynamic

        spec = {name: default_dynamic_qconfig for name in module_names}
        return quantize_dynamic(copy.deepcopy(model).float().cpu().eval(), qconfig_spec=spec, dtype=torch.qint8)


def save_torch_int8(qmodel: Any, directory: str | os.PathLike[str]) -> None:
    """Write the int8 state dict of ``qmodel`` as ``directory/model_int8.pt``."""
    import torch

    with quiet_torch_ao():
        torch.save(qmodel.state_dict(), Path(directory) / TORCH_INT8_FILE)


def load_torch_int8(artifact_dir: str | os.PathLike[str]) -> tuple[Any, Any]:
    """(int8 model, tokenizer) of a ``torch-int8-dynamic`` artifact: rebuild, quantize, load the int8 state."""
    import torch

    from compress.artifact import read_info
    from compress.models import load_model

    directory = Path(artifact_dir)
    info = read_info(directory, kinds=["quantized"])
    quant = info.extra.get("quantization", {})
    if quant.get("mode") != "torch-int8-dynamic" or not (directory / TORCH_INT8_FILE).is_file():
        raise ArtifactError(f"{directory} is not a torch-int8-dynamic artifact (no {TORCH_INT8_FILE}); "
                            "make one with `compress quantize --mode torch-int8-dynamic`")
    model, tokenizer = load_model(directory)
    qmodel = torch_int8_dynamic(model, quant.get("modules", []))
    with quiet_torch_ao():
        state = torch.load(directory / TORCH_INT8_FILE, map_location="cpu", weights_only=True)
        qmodel.load_state_dict(state)
    return qmodel.eval(), tokenizer
