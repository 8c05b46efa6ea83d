"""Which process this is when a recipe runs under a launcher (``torchrun``, ``accelerate launch``).

A launcher starts one copy of the command per process and tells each its place through the
environment (``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE``). Every copy trains (Accelerate shards the
batches and averages the gradients); only the main one writes the artifact, opens the MLflow run
and logs. A plain ``python -m compress ...`` is a world of one, where every helper here is free:
nothing is imported and no process group is made.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def _env_int(name: str, default: int) -> int:
    try:
        return int(os.environ.get(name, default))
    except ValueError:
        return default


def world_size() -> int:
    """Processes the launcher started (1 without a launcher)."""
    return max(1, _env_int("WORLD_SIZE", 1))


def is_main_process() -> bool:
    """Rank 0 of all processes: the one that writes outputs and tracks the run."""
    return _env_int("RANK", 0) == 0


def is_local_main_process() -> bool:
    """Rank 0 on this machine: the one that draws progress bars."""
    return _env_int("LOCAL_RANK", 0) == 0


def quiet_other_processes() -> None:
    """Keep INFO logging to the main process: the others would print every line again."""
    if not is_main_process():
        logging.getLogger().setLevel(logging.WARNING)


def _process_state():
    """Accelerate's ``PartialState``: made once per process, it joins the process group (gloo on CPU,
    nccl on GPUs) that the training loop's Accelerator then uses."""
    import torch
    from accelerate import PartialState

    return PartialState(cpu=not torch.cuda.is_available())


def wait_for_everyone() -> None:
    """Barrier across all processes (nothing in a world of one)."""
    if world_size() > 1:
        _process_state().wait_for_everyone()


def computed_on_main(compute: Callable[[], T]) -> T:
    """``compute()`` run on the main process only and its (picklable) result sent to every process.

    For work that must happen once, not once per process (the teacher's soft labels), and that
    the others cannot read from a file: on many machines each has its own disk.
    """
    if world_size() == 1:
        return compute()
    import torch.distributed as dist

    _process_state()
    box: list = [None]
    if is_main_process():
        try:
            box = [(True, compute())]
        except Exception as exc:  # noqa: BLE001 - sent on, so the others stop too instead of waiting forever
            box = [(False, exc)]
    dist.broadcast_object_list(box, src=0)
    ok, value = box[0]
    if not ok:
        raise value
    return value
