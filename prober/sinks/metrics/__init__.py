"""Prometheus exposition of the checks' Results and of the daemon itself.

sink.py: the sink (records Results, renders fast); families.py: every per-check family, one
table per kind of facts; state.py: what each check's series hold; render.py: the text and
the reference collector; daemon.py: the daemon's own series. The only users of
prometheus-client's registry and writers.
"""

from prober.sinks.metrics.families import FAMILIES
from prober.sinks.metrics.sink import CONTENT_TYPE, RENDER_CHUNK, MetricsSink
from prober.sinks.metrics.state import DURATION_BUCKETS, SeriesPlan

__all__ = [
    "CONTENT_TYPE",
    "DURATION_BUCKETS",
    "FAMILIES",
    "RENDER_CHUNK",
    "MetricsSink",
    "SeriesPlan",
]
