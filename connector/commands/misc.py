"""`sandbox`, `demo` and `init`: the local fake API, the whole flow with nothing set up,
and a first config written from a look at the database."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from connector import heap, logs
from connector.commands import output


def sandbox(args: argparse.Namespace) -> int:
    from connector.sandbox import Faults, Sandbox

    heap.release()  # a server that runs until stopped collects its garbage as ever

    faults = Faults(latency=args.latency, error_rate=args.error_rate, drop_rate=args.drop_rate,
                    rate_limit=args.rate_limit, token_lifetime=args.token_lifetime,
                    bulk_item_limit=args.bulk_item_limit)
    server = Sandbox(api_keys=[args.api_key], faults=faults, host=args.host, port=args.port)
    try:
        server.start()
    except OSError as exc:
        output.error(f"error: cannot listen on {args.host}:{args.port}: {exc.strerror}; "
                     "pick another --port")
        return 1
    output.line(f"sandbox Wiraya API on {server.url} (API key: {args.api_key}); Ctrl-C stops it")
    output.line(f"what it received: {server.url}/_sandbox/summary")
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
    return 0


def demo(args: argparse.Namespace) -> int:
    from connector import demo as the_demo

    logs.setup("text", "debug" if args.verbose else "error")
    return the_demo.run(Path(args.dir) if args.dir else None, output.rich_console())


def init(args: argparse.Namespace) -> int:
    from connector import config
    from connector import init as the_init

    if args.example:
        sys.stdout.write(the_init.example())
        return 0
    output = args.output or str(config.find(args.config))
    return the_init.run(args.url, output, args.force, args.region, stdout=sys.stdout,
                        stderr=sys.stderr)
