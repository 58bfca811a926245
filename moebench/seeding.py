"""Deterministic seeds derived from the suite seed and a cell's coordinates.

Seeds come from SHA-256 of the coordinates, so they do not depend on Python's hash
randomisation, on the order cells run in, or on how many workers run them.
"""

from __future__ import annotations

import hashlib

import numpy as np
import torch


def derive_seed(*parts: object) -> int:
    """A 63-bit seed from any printable coordinates, e.g. ``(suite_seed, dataset, rep)``."""
    text = "\x1f".join(str(p) for p in parts)
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little") >> 1


def torch_generator(seed: int, device: torch.device | str = "cpu") -> torch.Generator:
    """A torch generator on ``device`` seeded with ``seed``."""
    gen = torch.Generator(device=device)
    gen.manual_seed(seed)
    return gen


def numpy_rng(seed: int) -> np.random.Generator:
    """A numpy generator seeded with ``seed``."""
    return np.random.default_rng(seed)
