"""Prometheus metrics, shared by the client, the passes and the daemon's endpoint."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

REGISTRY = CollectorRegistry(auto_describe=True)

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
