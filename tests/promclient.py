"""Reading ``/metrics`` in the tests: a scrape over real HTTP, parsed by ``prometheus_client``'s
own text parser (so the output is checked against the format's reference reader)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families
from wsclient import connect

from helpers import UNIT, wait_for

__all__ = ["Samples", "open_on_both_workers", "scrape", "value", "wait_for_both_workers"]

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(url: str) -> Samples:
    """GET /metrics and parse it: ``{(sample name, sorted labels): value}``."""
    reply = httpx.get(url + "/metrics", trust_env=False, timeout=5 * UNIT)
    assert reply.status_code == 200
    assert reply.headers["content-type"].startswith("text/plain")
    samples: Samples = {}
    for family in text_string_to_metric_families(reply.text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    """The value of the sample ``name`` with exactly ``labels``."""
    return samples[(name, tuple(sorted(labels.items())))]


def open_on_both_workers(
    clients: contextlib.ExitStack,
    url: Callable[[], str],
    each: Callable[[Any, int], None] | None = None,
) -> list[Any]:
    """Under ``--workers 2``: open WebSockets at ``url()`` (an app whose connections first send
    their worker's pid) until both workers hold one; ``each(ws, n)`` reads what else the
    ``n``-th connection is sent. The connections, in ``clients``, in the order opened."""
    pids: set[int] = set()
    opened: list[Any] = []
    for _ in range(40):  # the kernel spreads connections: open until both workers have one
        ws = clients.enter_context(connect(url()))
        opened.append(ws)
        pids.add(int(ws.recv(timeout=10 * UNIT)))
        if each is not None:
            each(ws, len(opened))
        if len(pids) == 2:
            break
    assert len(pids) == 2, "every connection landed on one worker"
    return opened


def wait_for_both_workers(url: str) -> None:
    """Until a scrape of ``url`` counts both workers (each scrape asks the other worker)."""

    def whole() -> bool:
        return value(scrape(url), "plezi_processes") == 2

    wait_for(whole, "both workers answering the scrape", timeout=20 * UNIT)
