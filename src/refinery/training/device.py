"""What a fine-tuning runs on: the device and its efficiency settings, CPU threads, and this process's
place among the data-parallel processes.

:func:`detect_device` names the device and picks its settings (mixed precision, fused AdamW, attention,
torch.compile: see :func:`refinery.training.techniques.device_settings`). On CPU, training uses
:func:`cpu_thread_count` intra-op threads, and :func:`restore_torch_threads` puts torch's setting back
afterwards. :func:`world` reads the rank and process count torchrun sets
(:mod:`refinery.training.distributed`).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from refinery.config import TrainingConfig
    from refinery.training.techniques import DeviceSettings

# Below this size a model's matrices are too small to split across threads: synchronising them costs
# more than it saves, and on a busy machine every step waits for a descheduled thread.
SMALL_MODEL_PARAMETERS = 5_000_000


def world() -> tuple[int, int]:
    """This process's rank and the number of processes (torchrun sets RANK and WORLD_SIZE)."""
    return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))


def detect_device(tcfg: TrainingConfig) -> tuple[str, DeviceSettings]:
    """The device's name (the GPU's, or ``cpu``) and the settings training uses on it."""
    import torch

    from refinery.training import techniques

    use_cuda = torch.cuda.is_available()
    settings = techniques.device_settings(
        cuda=use_cuda,
        bf16_supported=torch.cuda.is_bf16_supported() if use_cuda else techniques.cpu_native_bf16(),
        compile_requested=tcfg.compile,
        precision=tcfg.precision,
    )
    return (torch.cuda.get_device_name(0) if use_cuda else "cpu"), settings


def cpu_thread_count(num_parameters: int) -> int:
    """Intra-op threads for CPU training: all CPUs this process may run on, one for a tiny model."""
    if num_parameters < SMALL_MODEL_PARAMETERS:
        return 1
    available = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, available)


@contextmanager
def restore_torch_threads() -> Iterator[None]:
    """Put torch's intra-op thread count back as it was, whatever happened inside."""
    import torch

    previous = torch.get_num_threads()
    try:
        yield
    finally:
        torch.set_num_threads(previous)
