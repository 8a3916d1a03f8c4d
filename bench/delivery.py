"""Delivery speed: contacts per second from the connector's client to the sandbox.

What it measures: `connector.wiraya.Wiraya.upsert_contacts` (the client a pass uses, built
from a YAML config loaded with `connector.config.load`) delivering N ready-made contacts to
the sandbox, which runs in a SEPARATE process (`python -m connector sandbox`) so that it
has its own interpreter and core. Variants, each at 0 ms and at 20 ms simulated latency
(`latency` set over HTTP: POST /_sandbox/faults):

- single calls (`bulk_size: 1`): one PUT /api/Contact/{id} per contact, `concurrency`
  in flight (default 16);
- bulk calls (`bulk_size: 100`): PUT /api/contact/_bulk with 100 contacts per body.

Baseline, in the same run against the same sandbox: a bare `httpx.AsyncClient` loop with
the same concurrency (N coroutines sharing one client whose pool has N connections, each
doing PUT /api/Contact/{id} with a Bearer token in a loop). Printed too, for reference: the
same loop with one client (of one connection) per coroutine, which tells what httpx's
shared connection pool costs; and a bare bulk loop (100-contact bulk bodies), which is what
the sandbox can take. CPU time per contact of this process and of the sandbox is printed
for every variant, to tell which side limits the rate.

Targets: single calls >= 80% of the bare loop; bulk >= 20,000 contacts/s; with 20 ms
latency and concurrency 16, single calls >= 85% of 800 requests/s (16 / 0.02 s).

Rate-limit check: with `wiraya.rate_limit: 100/s` (single calls, no latency, sandbox
without a limit of its own), the requests the sandbox received over a window (default
15 s, after a 2 s start whose burst is left out; `--rate-window 60` for the full minute)
are divided by the window; the deviation from 100/s is printed (target within 5%).

With `--profile`, one single-call run at 0 ms is profiled with pyinstrument (this process's
main thread: the event loop, the client, httpx) and the top functions are printed.

Run from the repo root:

    python bench/delivery.py                          # 3 repeats, 15 s rate window (~4 min)
    python bench/delivery.py --repeats 5 --rate-window 60 --profile   # the full-size run
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import common
from connector import config
from connector.wiraya import Wiraya


def contacts(count: int, offset: int = 0) -> dict[str, dict[str, Any]]:
    """Contacts as the mapping makes them (schema 1, personal and general parts)."""
    return {str(i): {"schema": 1,
                     "personal": {"phoneNumber": f"4670{1000000 + i:07d}",
                                  "givenName": f"Given{i}", "surName": f"Family{i}"},
                     "general": {"city": f"City{i % 50}"}}
            for i in range(offset, offset + count)}


async def bare_loop(url: str, items: dict[str, dict[str, Any]], concurrency: int,
                    bulk: int = 1, per_worker: bool = False) -> float:
    """The baseline: `concurrency` coroutines PUT in a loop; returns seconds (login excluded).

    One `httpx.AsyncClient` with a pool of `concurrency` connections, shared by the
    coroutines; or, with `per_worker`, one client (of one connection) per coroutine.
    """
    def client(connections: int) -> httpx.AsyncClient:
        limits = httpx.Limits(max_connections=connections,
                              max_keepalive_connections=connections)
        return httpx.AsyncClient(base_url=url, limits=limits, timeout=30)

    clients = [client(1) for _ in range(concurrency)] if per_worker else [client(concurrency)]
    reply = await clients[0].post("/auth/token/apikey", json={"key": common.API_KEY})
    headers = {"Authorization": f"Bearer {reply.json()['token']}"}
    if bulk == 1:
        calls = iter([(f"/api/Contact/{cid}", body) for cid, body in items.items()])
    else:
        keys = list(items)
        calls = iter([("/api/contact/_bulk", {k: items[k] for k in keys[i:i + bulk]})
                      for i in range(0, len(keys), bulk)])
    failed = 0

    async def worker(http: httpx.AsyncClient) -> None:
        nonlocal failed
        for path, body in calls:
            response = await http.put(path, json=body, headers=headers)
            failed += response.status_code != 200

    started = time.monotonic()
    await asyncio.gather(*(worker(clients[i % len(clients)]) for i in range(concurrency)))
    seconds = time.monotonic() - started
    for http in clients:
        await http.aclose()
    if failed:
        raise RuntimeError(f"bare loop: {failed} calls failed")
    return seconds


async def connector_run(path: Path, items: dict[str, dict[str, Any]]) -> float:
    """The connector's client, from the config at `path`; returns seconds (login excluded)."""
    async with Wiraya(config.load(path).wiraya) as api:
        await api.login()
        started = time.monotonic()
        results = await api.upsert_contacts(items)
        seconds = time.monotonic() - started
    refused = [r for r in results.values() if not r.ok]
    if len(results) != len(items) or refused:
        raise RuntimeError(f"connector: {len(refused)} refused, e.g. {refused[:1]}")
    return seconds


async def rate_check(path: Path, api: common.SandboxProcess, rate: float, warmup: float,
                     window: float) -> dict[str, float]:
    """Requests the sandbox received per second while the client runs at `rate`."""
    items = contacts(int(rate * (warmup + window + 5)))
    async with Wiraya(config.load(path).wiraya) as client:
        start_count = (await asyncio.to_thread(api.summary))["requests"]
        started = time.monotonic()
        task = asyncio.ensure_future(client.upsert_contacts(items))
        await asyncio.sleep(warmup)
        first, first_at, first_client = (await asyncio.to_thread(api.summary))["requests"], \
            time.monotonic(), client.requests
        await asyncio.sleep(window)
        last, last_at, last_client = (await asyncio.to_thread(api.summary))["requests"], \
            time.monotonic(), client.requests
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    summary = api.summary()
    return {"steady": (last - first) / (last_at - first_at),
            "client": (last_client - first_client) / (last_at - first_at),
            "from_start": (last - start_count) / (last_at - started),
            "limited": summary["requests_by_status"].get("429", 0)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--concurrency", type=int, default=16, help="wiraya.concurrency")
    parser.add_argument("--single", type=int, default=4000, help="contacts per single-call run")
    parser.add_argument("--bulk", type=int, default=100_000, help="contacts per bulk run")
    parser.add_argument("--bulk-size", type=int, default=100, help="wiraya.bulk_size for bulk")
    parser.add_argument("--latencies", type=float, nargs="+", default=[0.0, 0.02],
                        help="simulated latencies of the sandbox, seconds")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--rate", type=float, default=100.0, help="wiraya.rate_limit per second")
    parser.add_argument("--rate-window", type=float, default=15.0, help="seconds measured")
    parser.add_argument("--profile", action="store_true", help="profile a single-call run")
    args = parser.parse_args()
    started = common.header("delivery: contacts/s from the connector's client to the sandbox", args)

    base = {"rate_limit": "none", "concurrency": args.concurrency}
    results: dict[tuple[float, str], list[float]] = {}
    cpu: dict[tuple[float, str], list[tuple[float, float]]] = {}  # us per contact
    with common.temp_folder("bench-delivery-") as folder, common.SandboxProcess() as api:
        print(f"sandbox in its own process at {api.url}")

        def cfg(name: str, **wiraya: Any) -> Path:
            return common.write_config(folder, db_url="sqlite:///unused.db", api_url=api.url,
                                       wiraya={**base, **wiraya}, name=name)

        single_cfg = cfg("single.yaml", bulk_size=1)
        bulk_cfg = cfg("bulk.yaml", bulk_size=args.bulk_size)
        single_items, bulk_items = contacts(args.single), contacts(args.bulk)
        for latency in args.latencies:
            api.faults(latency=latency)
            for repeat in range(args.repeats):
                runs = {
                    "bare single": lambda: bare_loop(api.url, single_items, args.concurrency),
                    "bare single, client/worker": lambda: bare_loop(
                        api.url, single_items, args.concurrency, per_worker=True),
                    "connector single": lambda: connector_run(single_cfg, single_items),
                    "bare bulk": lambda: bare_loop(api.url, bulk_items, args.concurrency,
                                                   args.bulk_size),
                    "connector bulk": lambda: connector_run(bulk_cfg, bulk_items),
                }
                for what, run in runs.items():
                    count = args.single if "single" in what else args.bulk
                    ours, theirs = time.process_time(), api.cpu_seconds()
                    try:
                        seconds = asyncio.run(run())
                    except httpx.HTTPError as exc:
                        raise RuntimeError(f"{what} at {latency * 1000:.0f} ms failed: {exc!r}; "
                                           f"{api.state()}") from exc
                    ours, theirs = time.process_time() - ours, api.cpu_seconds() - theirs
                    api.reset()
                    results.setdefault((latency, what), []).append(count / seconds)
                    cpu.setdefault((latency, what), []).append(
                        (ours * 1e6 / count, theirs * 1e6 / count))
                common.log(f"latency {latency * 1000:.0f} ms, repeat {repeat + 1}: " + ", ".join(
                    f"{what} {results[(latency, what)][-1]:,.0f}/s" for what in runs))

        profile_lines: list[str] = []
        if args.profile:
            from pyinstrument import Profiler

            api.faults(latency=0.0)
            profiler = Profiler(interval=0.001, async_mode="disabled")
            profiler.start()
            seconds = asyncio.run(connector_run(single_cfg, single_items))
            profiler.stop()
            api.reset()
            common.RESULTS.mkdir(parents=True, exist_ok=True)
            saved = common.RESULTS / "delivery_single.pyisession"
            profiler.last_session.save(str(saved))
            plain = results.get((0.0, "connector single"))
            without = f", {common.median(plain):,.0f}/s without" if plain else ""
            profile_lines = [f"profile of one single-call run ({args.single:,} contacts, 0 ms, "
                             f"{args.single / seconds:,.0f}/s under the profiler{without}); "
                             f"saved: {saved.relative_to(common.ROOT)}",
                             *common.flat_profile(profiler.last_session, top=20)]

        api.faults(latency=0.0)
        rate_cfg = cfg("rate.yaml", bulk_size=1, rate_limit=f"{args.rate:g}/s")
        rate = asyncio.run(rate_check(rate_cfg, api, args.rate, 2.0, args.rate_window))

    print()
    print(f"concurrency {args.concurrency}; single runs {args.single:,} contacts, bulk runs "
          f"{args.bulk:,} contacts in bodies of {args.bulk_size}; medians of {args.repeats}")
    print(f"{'latency':>8}  {'what':<26} {'contacts/s':>11} {'requests/s':>11}  "
          f"{'range (contacts/s)':<20} {'CPU us/contact: client':>22} {'sandbox':>8}")
    for (latency, what), rates in results.items():
        per_request = 1 if "single" in what else args.bulk_size
        span = f"{min(rates):,.0f}..{max(rates):,.0f}"
        client_cpu = common.median([c for c, _ in cpu[(latency, what)]])
        sandbox_cpu = common.median([s for _, s in cpu[(latency, what)]])
        print(f"{latency * 1000:>5.0f} ms  {what:<26} {common.median(rates):>11,.0f} "
              f"{common.median(rates) / per_request:>11,.0f}  {span:<20} "
              f"{client_cpu:>22,.0f} {sandbox_cpu:>8,.0f}")
    print("CPU us/contact: CPU time used per contact by this process (the client; login and "
          "setup included) and by the sandbox process; 1e6 / (client + sandbox) is the rate "
          "the two could reach on one core")
    print()
    for latency in args.latencies:
        single = common.median(results[(latency, "connector single")])
        bare = common.median(results[(latency, "bare single")])
        bulk = common.median(results[(latency, "connector bulk")])
        bare_bulk = common.median(results[(latency, "bare bulk")])
        tag = f"{latency * 1000:.0f} ms"
        per_worker = common.median(results[(latency, "bare single, client/worker")])
        print(f"{tag:>6}: single calls = {single / bare:.1%} of the bare loop "
              f"(target >= 80%: {common.verdict(single / bare >= 0.80)}); "
              f"{single / per_worker:.1%} of the bare loop with one client per worker")
        print(f"{tag:>6}: bulk = {bulk:,.0f} contacts/s = {bulk / bare_bulk:.1%} of the bare bulk "
              f"loop (target >= 20,000/s: {common.verdict(bulk >= 20_000)})")
        if abs(latency - 0.02) < 1e-9 and args.concurrency == 16:
            ideal = args.concurrency / latency
            print(f"{tag:>6}: single calls = {single:,.0f} requests/s = {single / ideal:.1%} of "
                  f"{ideal:,.0f} (target >= 85%: {common.verdict(single / ideal >= 0.85)}); "
                  f"bare loop {bare / ideal:.1%}")
    deviation = rate["steady"] / args.rate - 1
    print()
    print(f"rate limit {args.rate:g}/s: the sandbox received {rate['steady']:.2f} requests/s over "
          f"{args.rate_window:g} s (after a 2 s start); deviation {deviation:+.2%} (target within "
          f"5%: {common.verdict(abs(deviation) <= 0.05)}); client-side count "
          f"{rate['client']:.2f}/s; from the start, burst included, {rate['from_start']:.2f}/s; "
          f"429 replies: {rate['limited']}")
    if profile_lines:
        print()
        for line in profile_lines:
            print(line)
    common.footer(started)
    return 0


if __name__ == "__main__":
    sys.exit(main())
