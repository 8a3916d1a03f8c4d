"""A local fake of the Wiraya ingest API, for tests, benchmarks and the demo.

It follows the contract in the project's API notes (auth, contact upsert, bulk upsert, campaign
links, events, 429 with Retry-After) and serves real HTTP/1.1 with keep-alive on a loopback
port. Fault knobs (`Faults`) can be turned while it serves: token lifetime, latency, 503s,
dropped connections, rate limiting, bulk item limit, per-item bulk failures, refused contact
ids, no bulk routes, a 200-variant of a bad key, strict upsert-before-link order, a proxy's
HTML maintenance page, calls applied and then left without a reply (dropped or too slow), and
a few hostile behaviours (bad JSON, wrong types, huge bodies, redirects, hung connections).
Shares can be exact counts instead: `Next(n)`.

What it received is kept in memory for assertions: `contacts`, `contact_writes`, `links`,
`events` (every applied event, duplicates too), `requests` (each says whether it was
applied), `holdbacks`, `requests_during_holdback()` and `summary()`.

Modules, each importing only those above it: `wire` (routes, JSON, canned bodies), `faults`,
`checks` (body validation), `records` (what was received), `routes` (applying a call), `api`
(auth, rate limit, faults, admin routes), `handler` (HTTP parsing), `listener` (the socket
server), `server` (the Sandbox). Stdlib only: nothing from the rest of the package.
"""

from connector.sandbox.faults import MISBEHAVIOURS, Faults, Next
from connector.sandbox.records import RequestRecord
from connector.sandbox.server import Sandbox

__all__ = ["MISBEHAVIOURS", "Faults", "Next", "RequestRecord", "Sandbox"]
