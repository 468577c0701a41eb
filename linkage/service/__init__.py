"""The linkage service: its store, HTTP routes and run worker, and the client parties use.

It holds encodings and opaque tokens, never raw identifiers, client ids or the secret;
it reaches the statistics side only through :class:`~linkage.service.statistics_side.StatisticsSide`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from linkage._lazy import lazy_exports

if TYPE_CHECKING:
    from linkage.service.client import ServiceClient
    from linkage.service.statistics_side import StatisticsSide
    from linkage.service.store import LinkageStore
    from linkage.service.worker import RunWorker

__all__ = [
    "LinkageStore",
    "RunWorker",
    "ServiceClient",
    "StatisticsSide",
]

__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "LinkageStore": "linkage.service.store",
        "RunWorker": "linkage.service.worker",
        "ServiceClient": "linkage.service.client",
        "StatisticsSide": "linkage.service.statistics_side",
    },
)
