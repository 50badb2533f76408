"""uvicorn + Starlette: the chat pattern. Every message received is sent to every connection
with a plain loop of `send_text` (run with uvicorn)."""

from starlette.applications import Starlette
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

CONNECTIONS: set[WebSocket] = set()


async def fanout(websocket: WebSocket) -> None:
    await websocket.accept()
    CONNECTIONS.add(websocket)
    try:
        while True:
            message = await websocket.receive_text()
            for ws in list(CONNECTIONS):
                try:
                    await ws.send_text(message)
                except (WebSocketDisconnect, RuntimeError, OSError):
                    CONNECTIONS.discard(ws)
    except WebSocketDisconnect:
        pass
    finally:
        CONNECTIONS.discard(websocket)


app = Starlette(routes=[WebSocketRoute("/", fanout)])
