"""daskfleet: secured, reproducible Dask clusters.

``daskfleet.connect("local")`` returns a connected ``distributed.Client`` (any local cluster's or AWS
cluster's name; ``user=`` for another user's certificate); ``daskfleet.security("local")`` the
``distributed.Security`` behind it.
"""

from __future__ import annotations

from typing import Any

__all__ = ["connect", "security"]


def connect(*args: Any, **kwargs: Any):
    """See daskfleet.client.connect.connect."""
    from .client.connect import connect as _connect

    return _connect(*args, **kwargs)


def security(*args: Any, **kwargs: Any):
    """See daskfleet.client.connect.security."""
    from .client.connect import security as _security

    return _security(*args, **kwargs)
