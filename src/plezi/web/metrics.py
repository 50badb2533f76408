"""``plezi.stats()`` and the ``/metrics`` route: the server's figures, as a dict and in the
Prometheus text format.

Theory of operation
-------------------
Nothing here runs per message or per request. The figures are plain ``int`` counters kept where
the events happen (:mod:`plezi.server.stats` for connections, the hub for publishes and
deliveries, :mod:`.latency` for request times); :func:`local_stats` reads them into one dict.
``/metrics`` turns that dict into Prometheus metric families with a ``prometheus_client`` custom
collector, built per scrape, so no ``prometheus_client`` object is touched on a hot path.

*Workers.* Under ``--workers`` each worker answers a scrape with the whole cluster's figures:
every worker listens on a Unix socket of its own (``stats-<index>.sock``) in the master's
temporary folder (:mod:`.stats_peers`); the worker that gets the scrape reads the others'
figures there and adds them to its own. ``prometheus_client``'s multiprocess mode was the other
way (see docs/metrics.md for the measurement): it writes every increment to a memory-mapped
file, so counting would cost on the hot paths, and it cannot aggregate custom collectors.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from ..server.stats import ServerStats
from .controller import Controller
from .latency import BUCKETS

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric

    from .routes import ControllerRoute

__all__ = ["cluster_stats", "local_stats", "merge_stats", "metrics_route", "render_metrics"]


def local_stats(app: Any = None) -> dict[str, Any]:
    """This process's figures (see docs/metrics.md for each key): those of the server that
    runs, else of ``app`` (a :class:`plezi.App`: its request times only)."""
    from ..pubsub.hub import hub

    server = hub.server
    figures = (server.stats if server is not None else ServerStats()).snapshot(server)
    status = hub.status()
    engine = str(status.get("engine", ""))
    figures["publishes"] = hub.published
    figures["deliveries"] = hub.delivered
    figures["presence_entries"] = hub.local_presence_entries()
    figures["pubsub"] = {
        "engine": engine,
        "connected": int(bool(status.get("connected", True))),
        "outages": int(status.get("outages", 0)),  # type: ignore[call-overload]
        "reconnects": int(status.get("reconnects", 0)),  # type: ignore[call-overload]
    }
    if server is not None:
        app = server.app
    times = getattr(app, "request_times", None)
    figures["requests"] = times.snapshot() if times is not None else {}
    figures["processes"] = 1
    return figures


async def cluster_stats() -> dict[str, Any]:
    """The figures of the whole cluster under ``--workers`` (this process's and every other
    worker's, added up); in a single process, :func:`local_stats`."""
    from .stats_peers import peer_stats

    total = local_stats()
    for figures in await peer_stats():
        merge_stats(total, figures)
    return total


def merge_stats(total: dict[str, Any], other: dict[str, Any]) -> None:
    """Add ``other``'s figures to ``total`` (numbers added, lists added item by item, text
    kept from ``total``)."""
    for key, value in other.items():
        mine = total.get(key)
        if mine is None:
            total[key] = value
        elif isinstance(mine, dict) and isinstance(value, dict):
            merge_stats(mine, value)
        elif isinstance(mine, list) and isinstance(value, list) and len(mine) == len(value):
            total[key] = [a + b for a, b in zip(mine, value, strict=True)]
        elif isinstance(mine, int | float) and isinstance(value, int | float):
            total[key] = mine + value


class _Figures:
    """A ``prometheus_client`` custom collector over one snapshot of the figures."""

    def __init__(self, figures: dict[str, Any]) -> None:
        self.figures = figures

    def collect(self) -> Iterator[Metric]:
        from prometheus_client.core import (
            CounterMetricFamily,
            GaugeMetricFamily,
        )

        f = self.figures
        yield GaugeMetricFamily("plezi_processes", "Server processes counted", f["processes"])

        def by(name: str, doc: str, label: str, values: dict[str, int], gauge: bool) -> Metric:
            family = (GaugeMetricFamily if gauge else CounterMetricFamily)(
                name, doc, labels=[label]
            )
            for key, value in values.items():
                family.add_metric([key], value)
            return family

        yield by("plezi_connections", "Open connections", "kind", f["connections"], True)
        yield by(
            "plezi_messages_received",
            "Messages received from clients",
            "kind",
            f["messages_received"],
            False,
        )
        yield by(
            "plezi_messages_sent",
            "Messages the application wrote to clients (write, not pub/sub)",
            "kind",
            f["messages_sent"],
            False,
        )
        yield by(
            "plezi_bytes_sent",
            "Bytes written to WebSocket and SSE clients after the handshake",
            "kind",
            f["bytes_sent"],
            False,
        )
        yield by(
            "plezi_connections_refused",
            "Connections refused, by reason",
            "reason",
            f["refused"],
            False,
        )
        yield CounterMetricFamily("plezi_publishes", "Messages published", f["publishes"])
        yield CounterMetricFamily(
            "plezi_deliveries", "Pub/sub messages handed to local subscribers", f["deliveries"]
        )
        slow = f["slow_consumers"]
        yield CounterMetricFamily(
            "plezi_slow_consumer_messages_dropped",
            "Messages dropped for slow consumers (slow_consumer=drop)",
            slow["dropped"],
        )
        yield CounterMetricFamily(
            "plezi_slow_consumers_disconnected",
            "Slow consumers disconnected (slow_consumer=disconnect)",
            slow["disconnected"],
        )
        yield by(
            "plezi_recoveries",
            "Channel recoveries of reconnecting clients, by result",
            "result",
            f["recoveries"],
            False,
        )
        yield by(
            "plezi_recovery_failures",
            "Recoveries that failed (recovered: false), by reason",
            "reason",
            f["recovery_failures"],
            False,
        )
        yield CounterMetricFamily(
            "plezi_recovered_messages",
            "Messages replayed from the history by recoveries",
            f["recovered_messages"],
        )
        yield GaugeMetricFamily(
            "plezi_presence_entries",
            "Entries of this process's connections in presence channels",
            f["presence_entries"],
        )
        yield from _pubsub_families(f["pubsub"])
        yield _latency_family(f["requests"])


def _pubsub_families(pubsub: dict[str, Any]) -> Iterator[Metric]:
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

    engine = pubsub["engine"]
    connected = GaugeMetricFamily(
        "plezi_pubsub_connected",
        "Processes whose pub/sub engine is connected (Redis, or the cluster relay)",
        labels=["engine"],
    )
    connected.add_metric([engine], pubsub["connected"])
    yield connected
    if engine == "redis":
        yield CounterMetricFamily(
            "plezi_redis_outages", "Connections to Redis lost", pubsub["outages"]
        )
        yield CounterMetricFamily(
            "plezi_redis_reconnects", "Reconnections to Redis after an outage", pubsub["reconnects"]
        )


def _latency_family(requests: dict[str, dict[str, Any]]) -> Metric:
    from prometheus_client.core import HistogramMetricFamily

    family = HistogramMetricFamily(
        "plezi_request_duration_seconds",
        "Time the application took to answer a request, by route",
        labels=["route"],
    )
    bounds = [*(repr(bound) for bound in BUCKETS), "+Inf"]
    for route, figures in sorted(requests.items()):
        family.add_metric(
            [route], list(zip(bounds, figures["buckets"], strict=True)), figures["sum"]
        )
    return family


def render_metrics(figures: dict[str, Any]) -> bytes:
    """``figures`` (a :func:`local_stats` dict) in the Prometheus text format."""
    from prometheus_client import CollectorRegistry, generate_latest

    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Figures(figures))
    return generate_latest(registry)


class MetricsEndpoint(Controller):
    """``GET``: the figures of the whole cluster in the Prometheus text format."""

    async def index(self) -> bool:
        from prometheus_client import CONTENT_TYPE_LATEST

        body = render_metrics(await cluster_stats())
        response = self.response
        response.headers["Content-Type"] = CONTENT_TYPE_LATEST
        response.headers["Cache-Control"] = "no-store"
        response.body = body
        return True


def metrics_route(path: str) -> ControllerRoute:
    """The route of ``plezi.route(path, "metrics")``."""
    from .routes import ControllerRoute

    return ControllerRoute(path, MetricsEndpoint)
