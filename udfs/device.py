"""Which device a task runs its model on, and one copy of each model per Python worker.

Spark reuses a Python worker across tasks (`spark.python.worker.reuse=true`), so a model kept
in this module's cache is loaded once per worker, not once per task or batch: the pattern of
`pyspark.ml.functions.predict_batch_udf`.
"""
from __future__ import annotations

import threading
import warnings
from collections.abc import Callable, Hashable
from typing import Any

_MODELS: dict[Hashable, Any] = {}
_LOCK = threading.Lock()


def task_gpu_addresses() -> list[str]:
    """The GPU addresses Spark assigned to the running task (empty outside a task or without a profile)."""
    try:
        from pyspark import TaskContext
    except ImportError:
        return []
    context = TaskContext.get()
    if context is None:
        return []
    gpu = context.resources().get("gpu")
    return list(gpu.addresses) if gpu is not None else []


def task_device(prefer_gpu: bool = True) -> str:
    """`cuda:<address>` of the GPU Spark gave this task; else `cuda:0` when torch sees CUDA; else `cpu`.

    An assigned address is mapped to what torch can open: where the executor's container shows
    only its own GPU (YARN/Kubernetes isolation) address 3 is `cuda:0`; where torch sees no CUDA
    at all (a test cluster with fake GPU addresses) the task runs on the CPU and says so once.
    """
    if not prefer_gpu:
        return "cpu"
    import torch

    visible = torch.cuda.device_count() if torch.cuda.is_available() else 0
    addresses = task_gpu_addresses()
    if not addresses:
        return "cuda:0" if visible else "cpu"
    address = int(addresses[0])
    if address < visible:
        return f"cuda:{address}"
    if visible == 1:
        return "cuda:0"
    if visible == 0:
        _warn_once(f"Spark assigned GPU {address} but torch sees no CUDA device; running on the CPU")
        return "cpu"
    raise RuntimeError(
        f"Spark assigned GPU {address} but torch sees only {visible} devices (check CUDA_VISIBLE_DEVICES)"
    )


_WARNED: set[str] = set()


def _warn_once(message: str) -> None:
    if message not in _WARNED:
        _WARNED.add(message)
        warnings.warn(message, RuntimeWarning, stacklevel=3)


def cached_model(key: Hashable, loader: Callable[[], Any]) -> Any:
    """The model cached under `key` in this worker, loading it with `loader()` the first time.

    The key should name everything that makes the loaded object differ (model path, device, dtype).
    Loading holds a lock, so threads of one worker never load the same model twice.
    """
    with _LOCK:
        if key not in _MODELS:
            _MODELS[key] = loader()
        return _MODELS[key]


def cached_keys() -> list[Hashable]:
    """The keys of the models loaded in this worker (to check that a model loaded once)."""
    with _LOCK:
        return list(_MODELS)
