"""The ``Device`` interface: where tensors live and how the clock is synchronised."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar

import torch

from .params import NoParams, Params

DTYPES: dict[str, torch.dtype] = {"float32": torch.float32, "float64": torch.float64}


class Device(ABC):
    """A compute device for tensors.

    Subclasses set ``name`` and ``default_dtype`` and implement :meth:`torch_device`,
    :meth:`is_available` and :meth:`synchronize`. A cell's run (:mod:`moebench.cell.compute`)
    calls :meth:`synchronize` before every read of the clock, so asynchronous devices (CUDA)
    are timed correctly.
    """

    name: ClassVar[str]
    summary: ClassVar[str] = ""
    default_dtype: ClassVar[torch.dtype] = torch.float64
    Params: ClassVar[type[Params]] = NoParams

    @abstractmethod
    def torch_device(self) -> torch.device:
        """The ``torch.device`` tensors are placed on."""

    @abstractmethod
    def is_available(self) -> bool:
        """Whether this device can be used on this machine."""

    @abstractmethod
    def synchronize(self) -> None:
        """Block until every queued kernel has finished."""

    def unavailable_reason(self) -> str:
        """Why :meth:`is_available` is false, said so that a user knows what to do."""
        return f"device {self.name!r} is not available on this machine"

    def describe(self) -> str:
        """A one-line description (model name, memory) for manifests."""
        return self.name

    def warm_up(self) -> None:
        """Pay one-off costs (lazy imports, library loading) before any clock starts.

        Runs a tiny autograd step, an optimiser step and a Cholesky solve on this device.
        """
        dev, dtype = self.torch_device(), self.default_dtype
        x = torch.ones(4, 3, dtype=dtype, device=dev, requires_grad=True)
        opt = torch.optim.SGD([x], lr=0.0)
        torch.logsumexp(x @ x.T, dim=1).sum().backward()
        opt.step()
        m = torch.eye(3, dtype=dtype, device=dev)
        torch.cholesky_solve(torch.ones(3, 1, dtype=dtype, device=dev), torch.linalg.cholesky(m))
        self.synchronize()

    def tensor(self, array, dtype: torch.dtype | None = None) -> torch.Tensor:
        """Copy a numpy array (or tensor) to this device, floating arrays as ``dtype``."""
        t = torch.as_tensor(array)
        if t.is_floating_point():
            t = t.to(dtype or self.default_dtype)
        return t.to(self.torch_device())
