"""Which proxy, if any, the client goes through: HTTPS_PROXY / HTTP_PROXY / ALL_PROXY and
NO_PROXY, read as Python's `urllib.request` reads them (lower-case names win; NO_PROXY lists
host names, domain suffixes, `*`).

Loopback hosts (`localhost`, 127.0.0.0/8, ::1) are never proxied, as Go's net/http decides:
a proxy elsewhere would reach *its own* loopback, never ours, and a sandbox or test server
on 127.0.0.1 must not be sent to a corporate proxy by surprise.

Credentials in a proxy URL are taken out of it (sent as proxy authorization), registered as
secrets for the log filter, and never part of what is shown.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from urllib.parse import unquote, urlsplit

from connector import logs
from connector.errors import ConfigError


@dataclass(frozen=True)
class Proxy:
    url: str  # scheme://host:port, without credentials: safe to show
    source: str  # the environment variable it came from, e.g. HTTPS_PROXY
    auth: tuple[str, str] | None = field(default=None, repr=False)


def is_loopback(host: str) -> bool:
    host = host.strip("[]").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def proxy_for(url: str, environ: Mapping[str, str] | None = None, *,
              bypass_loopback: bool = True) -> Proxy | None:
    """The proxy for requests to `url`, from `environ` (default: the process environment)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if bypass_loopback and is_loopback(host):
        return None
    proxies = _from_environment(environ)
    if not proxies or _bypass(host, proxies):
        return None
    scheme = parts.scheme.lower()
    if proxies.get(scheme):
        return _parse(proxies[scheme], f"{scheme.upper()}_PROXY")
    if proxies.get("all"):
        return _parse(proxies["all"], "ALL_PROXY")
    return None


def _bypass(host: str, proxies: dict[str, str]) -> bool:
    """NO_PROXY, as `urllib.request` reads it; imported only when some proxy variable is
    set (urllib.request costs about 5 ms of every start)."""
    import urllib.request

    # Public in urllib.request, but missing from the type stubs.
    bypass: Callable[[str, dict[str, str]], bool] = \
        urllib.request.proxy_bypass_environment  # type: ignore[attr-defined]
    return bypass(host, proxies)


def _from_environment(environ: Mapping[str, str] | None) -> dict[str, str]:
    """`urllib.request.getproxies_environment`, on any mapping: any case first, then
    lower-case names override (an empty lower-case one removes the entry)."""
    environ = os.environ if environ is None else environ
    found: dict[str, str] = {}
    for name, value in environ.items():
        if value and name.lower().endswith("_proxy"):
            found[name.lower()[:-6]] = value
    if "REQUEST_METHOD" in environ:  # CGI: HTTP_PROXY may come from a client's header
        found.pop("http", None)
    for name, value in environ.items():
        if name.endswith("_proxy"):
            if value:
                found[name[:-6]] = value
            else:
                found.pop(name[:-6], None)
    return found


def _parse(text: str, source: str) -> Proxy:
    if "://" not in text:
        text = "http://" + text  # `proxy:3128`, as curl reads it
    parts = urlsplit(text)
    if parts.scheme not in {"http", "https"}:
        raise ConfigError([(source, f"a {parts.scheme}:// proxy is not supported; give an "
                                    "http:// (or https://) proxy")], "environment")
    if not parts.hostname:
        raise ConfigError([(source, "the proxy has no host; write it as "
                                    "http://proxy.example:3128")], "environment")
    auth = None
    if parts.username is not None:
        user, password = unquote(parts.username), unquote(parts.password or "")
        logs.register_secret(password)
        logs.register_secret(parts.password)
        auth = (user, password)
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    port = f":{parts.port}" if parts.port else ""
    return Proxy(f"{parts.scheme}://{host}{port}", source, auth)
