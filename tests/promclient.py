"""Reading ``/metrics`` in the tests: a scrape over real HTTP, parsed by ``prometheus_client``'s
own text parser (so the output is checked against the format's reference reader)."""

from __future__ import annotations

import httpx
from prometheus_client.parser import text_string_to_metric_families

from helpers import UNIT

__all__ = ["Samples", "scrape", "value"]

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
