"""socketify (uWebSockets, C++, PyPI): HTTP hello world and WebSocket echo on ``/``, or with
``--fanout`` every message received is published to all subscribers with its own
``app.publish`` (the fan-out runs in C++: one ``send`` per subscriber, no Python per delivery)."""

import argparse

from socketify import App, AppListenOptions, CompressOptions

ROOM = "room"


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--fanout", action="store_true")
    args = p.parse_args()
    app = App()

    def hello(res, req) -> None:  # type: ignore[no-untyped-def]
        res.write_header("Content-Type", "text/plain; charset=utf-8")
        res.end("Hello World!")

    def echo(ws, message, opcode) -> None:  # type: ignore[no-untyped-def]
        ws.send(message, opcode)

    def subscribe(ws) -> None:  # type: ignore[no-untyped-def]
        ws.subscribe(ROOM)

    def publish(ws, message, opcode) -> None:  # type: ignore[no-untyped-def]
        app.publish(ROOM, message, opcode)  # to all subscribers, the sender too

    behaviour = {
        "compression": CompressOptions.DISABLED,
        "max_payload_length": 16 * 1024 * 1024,
        "idle_timeout": 0,
        # Far above what the load generators queue: a slow reader is never dropped.
        "max_backpressure": 64 * 1024 * 1024,
        "message": publish if args.fanout else echo,
    }
    if args.fanout:
        behaviour["open"] = subscribe
    app.get("/", hello)
    app.ws("/*", behaviour)
    app.listen(AppListenOptions(port=args.port, host="127.0.0.1"), lambda config: None)
    app.run()


if __name__ == "__main__":
    main()
