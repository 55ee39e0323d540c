"""``python -m discovery``: see what Parley nodes the link shows, or stand in for one.

::

    python -m discovery browse [--interface 192.168.1.20]
    python -m discovery publish --id ID --name NAME --port 7001 [--cv 0] [--ttl 120]

Both print one JSON object per line: ``{"event": "ready", ...}`` once started, then
``{"event": "added"|"updated"|"removed", "reason": ..., "peer": {...}}``. ``publish`` also
browses (ignoring itself) and reads commands on stdin, one a line: ``cv N`` (new catalog
version), ``name TEXT`` (new display name), ``quit``. End of input, SIGTERM or Ctrl-C withdraw
the service with goodbye packets before exiting.

Without ``--interface`` this multicasts on every interface: never run it that way from a test
outside a network namespace (see PLATFORM.md).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import signal
import sys
from typing import Any

from discovery.browser import Browser, PeerEvent
from discovery.errors import DiscoveryError
from discovery.interfaces import advertised_addresses, follow_interface_changes, make_zeroconf
from discovery.publisher import DEFAULT_HOST_TTL, Publisher


def _print(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


async def _print_event(event: PeerEvent) -> None:
    _print({"event": event.kind, "reason": event.reason, "peer": event.record.to_dict()})


async def _run(args: argparse.Namespace) -> int:
    interfaces = args.interface or None
    aiozc = make_zeroconf(interfaces)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    publisher: Publisher | None = None
    browser = Browser(aiozc, own_node_id=getattr(args, "id", None), on_event=_print_event)
    try:
        await browser.start()
        if args.command == "publish":
            publisher = Publisher(
                aiozc,
                node_id=args.id,
                name=args.name,
                port=args.port,
                catalog_version=args.cv,
                # None: this host's addresses, followed as they change (see --follow-interfaces)
                addresses=args.address or (interfaces and advertised_addresses(interfaces)),
                host_ttl=args.ttl,
                other_ttl=max(args.ttl, 120),
            )
            await publisher.start()
            _print(
                {
                    "event": "ready",
                    "instance": publisher.instance_name,
                    "addresses": publisher.addresses,
                }
            )
            commands = asyncio.create_task(_read_commands(publisher, stop))
        else:
            _print({"event": "ready"})
            commands = None
        follow = None
        if interfaces is None and args.follow_interfaces > 0:
            follow = asyncio.create_task(
                follow_interface_changes(aiozc, publisher, browser, interval=args.follow_interfaces)
            )
        await stop.wait()
        if follow is not None:
            follow.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await follow
        if commands is not None:
            commands.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await commands
    except DiscoveryError as exc:
        print(f"discovery: {exc}", file=sys.stderr)
        return 1
    finally:
        await browser.close()
        if publisher is not None:
            await publisher.close()
        await aiozc.async_close()
    return 0


async def _read_commands(publisher: Publisher, stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while line := (await reader.readline()).decode("utf-8", "replace").strip():
        verb, _, rest = line.partition(" ")
        try:
            if verb == "cv":
                await publisher.update(catalog_version=int(rest))
            elif verb == "name":
                await publisher.update(name=rest)
            elif verb == "quit":
                break
            else:
                print(
                    f"discovery: unknown command {verb!r} (cv N, name TEXT, quit)", file=sys.stderr
                )
                continue
        except (ValueError, DiscoveryError) as exc:
            print(f"discovery: {line!r}: {exc}", file=sys.stderr)
            continue
        _print({"event": "applied", "command": line})
    stop.set()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m discovery", description=__doc__.split("\n")[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logs on stderr")
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("browse", "publish"):
        cmd = sub.add_parser(name)
        cmd.add_argument(
            "--interface",
            action="append",
            metavar="ADDR",
            help="IPv4 address to run mDNS on (repeatable; default: all)",
        )
        cmd.add_argument(
            "--follow-interfaces",
            type=float,
            default=30.0,
            metavar="SECONDS",
            help="without --interface: check for new or gone interfaces this often (0: never)",
        )
    publish = sub.choices["publish"]
    publish.add_argument("--id", required=True, help="node id (key fingerprint)")
    publish.add_argument("--name", required=True, help="display name")
    publish.add_argument("--port", type=int, required=True, help="peer API port")
    publish.add_argument("--cv", type=int, default=0, help="catalog version")
    publish.add_argument(
        "--ttl",
        type=int,
        default=DEFAULT_HOST_TTL,
        help="host TTL in seconds: how long a dead node stays listed",
    )
    publish.add_argument(
        "--address",
        action="append",
        metavar="ADDR",
        help="address to announce (repeatable; default: the interfaces')",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        stream=sys.stderr,
        format="%(asctime)s %(name)s %(message)s",
    )
    return asyncio.run(_run(args))


if __name__ == "__main__":
    sys.exit(main())
