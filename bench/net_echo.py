#!/usr/bin/env python3
"""A protocol-based echo server on asyncio or uvloop, for bench/net.sh.

Usage: net_echo.py --loop asyncio|uvloop [--port P]

asyncio's "TCP Echo Server" example with a Protocol (no streams): data_received writes the
bytes back. Listens on 127.0.0.1 (port 0 unless --port), prints the bound port alone on its
first line of stdout once it accepts, and serves until SIGINT or SIGTERM (exit status 0).
asyncio's transports already set TCP_NODELAY on every TCP connection, and so does uvloop.
"""

import argparse
import asyncio
import signal
import sys


class Echo(asyncio.Protocol):
    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        self.transport.write(data)


def new_loop(name):
    if name == "asyncio":
        return asyncio.new_event_loop()
    try:
        import uvloop
    except ImportError:
        sys.exit("uvloop is not installed in this Python (bench/net.sh makes a venv with it)")
    return uvloop.new_event_loop()


async def serve(port):
    loop = asyncio.get_running_loop()
    server = await loop.create_server(Echo, "127.0.0.1", port)
    stop = loop.create_future()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, lambda: stop.done() or stop.set_result(None))
    print(server.sockets[0].getsockname()[1], flush=True)
    await stop
    server.close()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--loop", choices=["asyncio", "uvloop"], default="asyncio")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    loop = new_loop(args.loop)
    try:
        loop.run_until_complete(serve(args.port))
    finally:
        loop.close()


if __name__ == "__main__":
    main()
