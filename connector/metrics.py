"""Prometheus metrics, shared by the client, the passes and the daemon's endpoint.

No `_created` series: `disable_created_metrics()` keeps each counter and histogram to the
series people alert on (the `_created` twins only double the scrape).
"""

from __future__ import annotations

import platform

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client import disable_created_metrics as _disable_created_metrics

from connector import __version__

_disable_created_metrics()  # type: ignore[no-untyped-call]

REGISTRY = CollectorRegistry(auto_describe=True)

BUILD_INFO = Gauge("connector_build_info", "Always 1; the labels say which connector runs",
                   ["version", "python"], registry=REGISTRY)
BUILD_INFO.labels(__version__, platform.python_version()).set(1)

ROWS = Counter("connector_rows", "Rows handled, by stream and outcome "
               "(read, sent, skipped, dead, waiting)", ["stream", "outcome"], registry=REGISTRY)
DEAD_LETTERS = Gauge("connector_dead_letters", "Rows held as dead letters now", ["stream"],
                     registry=REGISTRY)
WAITING = Gauge("connector_waiting_events", "Events waiting for their contact", ["stream"],
                registry=REGISTRY)
LAG = Gauge("connector_watermark_lag_seconds", "Seconds between now and a time watermark",
            ["stream"], registry=REGISTRY)
PASSES = Counter("connector_passes", "Passes run, by stream and outcome", ["stream", "outcome"],
                 registry=REGISTRY)
LAST_SUCCESS = Gauge("connector_last_success_timestamp_seconds",
                     "Unix time of the stream's last successful pass", ["stream"],
                     registry=REGISTRY)
API_REQUESTS = Counter("connector_api_requests", "Requests sent to Wiraya, by route and status",
                       ["route", "status"], registry=REGISTRY)
API_LATENCY = Histogram("connector_api_latency_seconds", "Wiraya reply time, by route", ["route"],
                        registry=REGISTRY,
                        buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))
API_RATE_LIMITED = Counter("connector_api_rate_limited", "429 replies from Wiraya",
                           registry=REGISTRY)

# The daemon's own: how long passes take, and what readiness is made of.
PASS_DURATION = Histogram("connector_pass_duration_seconds", "Time one pass took, by stream",
                          ["stream"], registry=REGISTRY,
                          buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600))
CONSECUTIVE_FAILURES = Gauge("connector_stream_consecutive_failures",
                             "Passes of the stream that failed in a row (0 after a good one)",
                             ["stream"], registry=REGISTRY)
API_HOLD = Gauge("connector_api_hold_seconds",
                 "Seconds left of a Retry-After hold that every call obeys (0: none)",
                 registry=REGISTRY)
READY = Gauge("connector_ready", "1 when /readyz answers ready, 0 when it does not",
              registry=REGISTRY)
