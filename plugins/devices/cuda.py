"""The CUDA device: tensors on the current GPU, clock read after ``cuda.synchronize``."""

from __future__ import annotations

import torch

from moebench import Device, hookimpl


class CUDA(Device):
    """The current CUDA GPU. float32 by default (GPUs' float64 throughput is often far lower);
    ask for ``dtype: float64`` in a suite to change it."""

    name = "cuda"
    summary = "NVIDIA GPU via torch.cuda (float32 by default)"
    default_dtype = torch.float32

    def torch_device(self) -> torch.device:
        return torch.device("cuda")

    def is_available(self) -> bool:
        return torch.cuda.is_available()

    def unavailable_reason(self) -> str:
        return (
            "device 'cuda' is not available: torch.cuda.is_available() is False "
            f"(torch {torch.__version__}); run with --device cpu or install a CUDA build of torch"
        )

    def synchronize(self) -> None:
        torch.cuda.synchronize()

    def describe(self) -> str:
        if not self.is_available():
            return "cuda (unavailable)"
        props = torch.cuda.get_device_properties(0)
        return f"cuda ({props.name}, {props.total_memory / 2**30:.0f} GiB)"


@hookimpl
def register_devices(register):
    register(CUDA)
