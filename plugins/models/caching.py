"""Values derived from a piece of data, kept with it while it lives: :func:`data_cache`.

Successive calls on the same data reuse what an earlier call derived from it: the features with
an intercept column of an input tensor, the gate's Hessian at the last EM M-step of a
:class:`~moebench_plugins.models.kernels.RowChunks`, the statistics of the last mirror step.
Each piece of data (any object that supports weak references: a tensor, a ``RowChunks``) gets
one :class:`DataCache`, created on first use by :func:`data_cache` and dropped when the data is
garbage-collected. The callers name their entries and check that an entry still applies (tensor
versions, parameters) before using it.
"""

from __future__ import annotations

import weakref
from typing import Any

__all__ = ["DataCache", "data_cache"]


class DataCache(dict[str, Any]):
    """The values derived from one piece of data, by name (a plain ``dict``).

    Created by :func:`data_cache`; lives as long as its data.
    """


#: ``id(data) -> (weakref(data), its cache)``; an entry is removed when its data is collected.
_CACHES: dict[int, tuple[weakref.ref, DataCache]] = {}


def data_cache(data: object) -> DataCache:
    """The :class:`DataCache` of ``data``, created on first use and dropped with ``data``.

    Parameters
    ----------
    data
        The data the cached values are derived from; any object that supports weak references.

    Returns
    -------
    DataCache
        The same object on every call for the same live ``data``.
    """
    slot = id(data)
    hit = _CACHES.get(slot)
    if hit is not None and hit[0]() is data:
        return hit[1]
    cache = DataCache()
    # the callback holds the table itself: at interpreter exit the module global may be gone
    ref = weakref.ref(data, lambda _ref, slot=slot, caches=_CACHES: caches.pop(slot, None))
    _CACHES[slot] = (ref, cache)
    return cache
