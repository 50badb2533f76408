"""python-socketio: the chat pattern. Every "chat" event received is emitted to every client
with ``sio.emit``, the idiomatic broadcast (no ``to``: everyone connected to "/").

python-socketio's ASGI mode under uvicorn (uvloop, httptools), as its documentation deploys it.
Everything is python-socketio's default (async handlers, Engine.IO pings every 25 s, client
monitor task, no logging) except ``ping_timeout`` (see below) and what only adds cost outside
the library: uvicorn's access log and its own WebSocket-level pings (Engine.IO already pings),
as for the Starlette peer.
"""

import argparse

import socketio
import uvicorn

# ping_timeout: the one departure from the defaults (pings still go every 25 s). Under the burst
# and steady loads python-socketio reads a client's pong only after every event that client sent
# before it; with the default 20 s it drops the sender ("ping timeout") ~45 s into a burst, and
# the events of the sender not yet handled are dropped with it.
sio = socketio.AsyncServer(async_mode="asgi", ping_timeout=600)
app = socketio.ASGIApp(sio)


@sio.on("chat")
async def chat(sid: str, data: str) -> None:
    await sio.emit("chat", data)


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    # uvicorn's "auto" is websockets-sansio when websockets is installed (uvicorn[standard]).
    p.add_argument("--ws", default="websockets-sansio")
    args = p.parse_args()
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=args.port,
        loop="uvloop",
        http="httptools",
        ws=args.ws,
        ws_ping_interval=None,
        log_level="warning",
        access_log=False,
        backlog=4096,
    )
