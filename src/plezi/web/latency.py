"""Request latency per route, for ``/metrics``: plain counts, no Prometheus object per request.

:class:`RequestTimes` is switched on by ``plezi.route(path, "metrics")`` (an application with no
metrics route pays nothing: :meth:`plezi.web.app.App.handle` is then not wrapped). A request
costs two clock reads, one bisection and two additions; the counts become a Prometheus
histogram only when ``/metrics`` is read (:mod:`plezi.web.metrics`).

What is timed: from the routing of a complete request to the reply the application returns (an
``async`` action's included, a file's sending not), so the figure is the application's time,
not the network's. A request no route answered is counted under the route ``""``.
"""

from __future__ import annotations

from bisect import bisect_left
from typing import Any, Final

__all__ = ["BUCKETS", "RequestTimes"]

#: Upper bounds of the histogram's buckets, in seconds (``+Inf`` is implied): finer than
#: Prometheus' defaults below 5 ms, where most replies of a real-time server fall.
BUCKETS: Final = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)


class RequestTimes:
    """Per route: how many requests fell in each bucket, and the sum of their durations."""

    __slots__ = ("routes",)

    def __init__(self) -> None:
        #: Route (a :class:`~.routes.ControllerRoute`, ``None``: no route matched) ->
        #: ``[count per bucket (the last one: +Inf)..., sum of seconds]``. PERF: keyed by the
        #: object, labelled by its path only when read.
        self.routes: dict[Any, list[float]] = {}

    def observe(self, route: Any, seconds: float) -> None:
        """Count one request of ``route`` that took ``seconds``."""
        counts = self.routes.get(route)
        if counts is None:
            counts = self.routes[route] = [0] * (len(BUCKETS) + 2)
        counts[bisect_left(BUCKETS, seconds)] += 1
        counts[-1] += seconds

    def snapshot(self) -> dict[str, dict[str, Any]]:
        """Per route path (routes with the same path added up): ``buckets`` (cumulative
        counts, one per bound of :data:`BUCKETS`, then ``+Inf``), ``count`` and ``sum``
        (seconds), the shape of a Prometheus histogram."""
        result: dict[str, dict[str, Any]] = {}
        for route, counts in list(self.routes.items()):
            label = route.pattern.path if route is not None else ""
            found = result.setdefault(
                label, {"buckets": [0] * (len(BUCKETS) + 1), "count": 0, "sum": 0.0}
            )
            total = 0
            for index, count in enumerate(counts[:-1]):
                total += int(count)
                found["buckets"][index] += total
            found["count"] += total
            found["sum"] += counts[-1]
        return result
