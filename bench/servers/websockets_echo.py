"""The `websockets` package's server: WebSocket echo."""

import argparse
import asyncio

import uvloop
from websockets.asyncio.server import serve


async def handler(websocket):  # type: ignore[no-untyped-def]
    async for message in websocket:
        await websocket.send(message)


async def main(port: int) -> None:
    async with serve(handler, "127.0.0.1", port, ping_interval=None, compression=None):
        await asyncio.get_running_loop().create_future()


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    uvloop.run(main(p.parse_args().port))
