"""The CPU device: float64 by default."""

from __future__ import annotations

import platform

import torch

from moebench import Device, hookimpl


class CPU(Device):
    """Tensors in main memory; torch's intra-op threads run the kernels."""

    name = "cpu"
    summary = "CPU via torch (float64 by default)"
    default_dtype = torch.float64

    def torch_device(self) -> torch.device:
        return torch.device("cpu")

    def is_available(self) -> bool:
        return True

    def synchronize(self) -> None:
        """CPU kernels are synchronous: nothing to wait for."""

    def describe(self) -> str:
        cpu = platform.processor() or platform.machine()
        return f"cpu ({cpu}, {torch.get_num_threads()} torch threads)"


@hookimpl
def register_devices(register):
    register(CPU)
