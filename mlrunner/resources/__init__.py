"""What commands run on: GPUs found by nvidia-smi (``gpus``: discovery, machine-wide share
locks, failure classification) and the slots handed to tasks (``slots``: fixed 0.5.9 slots
or GPU pools with per-GPU shares, free-memory floors, multi-GPU tasks, FIFO fairness)."""

from mlrunner.resources.gpus import (
    GpuInfo,
    NvidiaSmiNotFound,
    ShareLock,
    classify_failure,
    default_lock_dir,
    ensure_lock_dir,
    query_gpus,
)
from mlrunner.resources.slots import Allocation, SlotAllocator, visible_devices

__all__ = [
    "Allocation",
    "GpuInfo",
    "NvidiaSmiNotFound",
    "ShareLock",
    "SlotAllocator",
    "classify_failure",
    "default_lock_dir",
    "ensure_lock_dir",
    "query_gpus",
    "visible_devices",
]
