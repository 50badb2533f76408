"""The `websockets` package's server: every message received goes to all with broadcast()."""

import argparse
import asyncio

import uvloop
from websockets.asyncio.server import broadcast, serve

CONNECTIONS = set()


async def handler(websocket):
    CONNECTIONS.add(websocket)
    try:
        async for message in websocket:
            broadcast(CONNECTIONS, message)
    finally:
        CONNECTIONS.discard(websocket)


async def main(port):
    async with serve(handler, "127.0.0.1", port, max_queue=None, ping_interval=None):
        await asyncio.get_running_loop().create_future()


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    uvloop.run(main(p.parse_args().port))
