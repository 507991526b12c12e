"""What /metrics answers with: the text format or OpenMetrics, gzipped or not.

The choice is prometheus-client's own (`choose_encoder`, `gzip_accepted`), so it follows
what Prometheus sends (`Accept: application/openmetrics-text;version=1.0.0,...`,
`Accept-Encoding: gzip`); the body always comes from MetricsSink's cached renderer.
"""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client.exposition import choose_encoder, gzip_accepted

from prober.sinks.metrics import CONTENT_TYPE

OPENMETRICS_CONTENT_TYPE = "application/openmetrics-text; version=1.0.0; charset=utf-8"
_OPENMETRICS = "application/openmetrics-text"


@dataclass(frozen=True, slots=True)
class Exposition:
    """One scrape's format: OpenMetrics 1.0 or text 0.0.4, and whether to gzip it."""

    openmetrics: bool
    gzip: bool

    @property
    def content_type(self) -> str:
        return OPENMETRICS_CONTENT_TYPE if self.openmetrics else CONTENT_TYPE


def negotiate(accept: str | None, accept_encoding: str | None) -> Exposition:
    """The format a scraper asked for; anything but OpenMetrics gets the text format."""
    _, content_type = choose_encoder(accept or "")
    return Exposition(content_type.startswith(_OPENMETRICS), gzip_accepted(accept_encoding or ""))
