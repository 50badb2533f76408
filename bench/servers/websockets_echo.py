"""The `websockets` package's server: WebSocket echo."""

import argparse
import asyncio

import uvloop
from websockets.asyncio.server import serve


async def handler(websocket):  # type: ignore[no-untyped-def]
    async for message in websocket:
        await websocket.send(message)


async def main(port: int, deflate: bool) -> None:
    compression = "deflate" if deflate else None  # the package's default is "deflate"
    async with serve(handler, "127.0.0.1", port, ping_interval=None, compression=compression):
        await asyncio.get_running_loop().create_future()


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--deflate", action="store_true", help="permessage-deflate (its defaults)")
    args = p.parse_args()
    uvloop.run(main(args.port, args.deflate))
