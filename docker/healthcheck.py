#!/opt/connector/bin/python
"""The image's HEALTHCHECK: GET /healthz where the config in use (`$CONNECTOR_CONFIG`) puts
the endpoint (`metrics: listen:`); exit 0 when the daemon answers 200, 1 otherwise, with the
reason on stdout (`docker inspect` shows it). Liveness only: /readyz is for orchestrators."""

from __future__ import annotations

import sys
import urllib.error
import urllib.request

from connector import config
from connector.errors import ConfigError

WILDCARDS = {"0.0.0.0", "::", ""}  # noqa: S104 - listening everywhere: ask on loopback


def main() -> int:
    try:
        settings = config.load()
    except ConfigError as exc:
        print(f"unhealthy: the config does not load: {exc}")
        return 1
    if settings.metrics is None:
        print("unhealthy: the config has no metrics: section, so there is no /healthz to ask; "
              "add `metrics: {listen: 127.0.0.1:9464}`")
        return 1
    host, port = settings.metrics.address
    host = "127.0.0.1" if host in WILDCARDS else host
    url = f"http://{'[' + host + ']' if ':' in host else host}:{port}/healthz"
    try:
        with urllib.request.urlopen(url, timeout=5) as reply:
            print(f"healthy: {url} answered {reply.status}")
            return 0
    except urllib.error.HTTPError as exc:
        print(f"unhealthy: {url} answered {exc.code}")
    except OSError as exc:
        print(f"unhealthy: {url}: {exc}")
    return 1


if __name__ == "__main__":
    sys.exit(main())
