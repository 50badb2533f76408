"""Command-line flags, parsed when the server starts (Plezi/Iodine style)."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

from .config import Limits, ServerConfig
from .errors import ConfigError

__all__ = ["build_parser", "config_from_args", "main"]


def _size(text: str) -> int:
    """``1024``, ``64k``, ``50m``, ``1g`` -> bytes."""
    units = {"k": 1024, "m": 1024**2, "g": 1024**3}
    text = text.strip().lower().removesuffix("b")
    factor = units.get(text[-1:], 1)
    number = text[:-1] if text[-1:] in units else text
    try:
        value = int(float(number) * factor)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (try 64k, 50m)") from None
    if value <= 0:
        raise argparse.ArgumentTypeError("a size must be positive")
    return value


def _rate(text: str) -> int:
    """A size, or ``0`` (off): ``--min-body-rate``."""
    return 0 if text.strip() == "0" else _size(text)


def _origins(text: str) -> list[str]:
    """``https://a.example,https://b.example`` -> one entry per origin."""
    return [part.strip() for part in text.split(",") if part.strip()]


def build_parser() -> argparse.ArgumentParser:
    """The flags every plezi app accepts."""
    p = argparse.ArgumentParser(
        prog="plezi", add_help=False, description="Run a plezi application."
    )
    p.add_argument("-p", "--port", type=int, help="TCP port (default: $PORT or 3000)")
    p.add_argument("-b", "--bind", help="address to bind, or a Unix socket path (default 0.0.0.0)")
    p.add_argument(
        "-w", "--workers", type=int, help="worker processes (default: $WEB_CONCURRENCY or 1)"
    )
    p.add_argument(
        "--redis",
        metavar="URL",
        help="pub/sub through this Redis (default: $PL_REDIS_URL or $REDIS_URL)",
    )
    p.add_argument(
        "--slow-consumer",
        choices=("disconnect", "drop"),
        dest="slow_consumer",
        help="a client past --max-outgoing is disconnected (default) or its "
        "messages are dropped until it catches up",
    )
    p.add_argument("-v", "--verbose", action="store_true", default=None, help="log every request")
    p.add_argument(
        "--max-header",
        type=_size,
        dest="max_header_size",
        help="largest request head (default 32k; 431 past it)",
    )
    p.add_argument(
        "--max-body",
        type=_size,
        dest="max_body_size",
        help="largest request body (default 50m; 413 past it)",
    )
    p.add_argument(
        "--max-msg",
        type=_size,
        dest="max_message_size",
        help="largest incoming WebSocket message (default 1m; close 1009 past it)",
    )
    p.add_argument(
        "--max-outgoing",
        type=_size,
        dest="max_outgoing_buffer",
        help="bytes queued for one client before it is disconnected (default 4m)",
    )
    p.add_argument(
        "--max-conn",
        "-maxcl",
        type=int,
        dest="max_connections",
        help="open connections past which new ones get 503 (default: the open-file limit - 64)",
    )
    p.add_argument(
        "--timeout",
        type=float,
        dest="keepalive_timeout",
        help="idle keep-alive timeout in seconds (default 40)",
    )
    p.add_argument(
        "--min-body-rate",
        type=_rate,
        dest="min_body_rate",
        help="bytes a second a request body must average after --header-timeout "
        "(default 1k, 0: none; 408 below it)",
    )
    p.add_argument(
        "--header-timeout",
        type=float,
        dest="header_timeout",
        help="seconds to receive a request head (default 10; 408 past it)",
    )
    p.add_argument(
        "--ping",
        type=float,
        dest="ping_interval",
        help="seconds of WebSocket silence before a server ping (default 40, 0: off)",
    )
    p.add_argument(
        "--origin",
        type=_origins,
        action="extend",
        dest="allowed_origins",
        metavar="ORIGIN",
        help="allow WebSocket upgrades only from this Origin (https://example.com, "
        "https://*.example.com; repeat or comma-separate for more; default: no check)",
    )
    p.add_argument(
        "--public",
        "-www",
        "-public",
        metavar="DIR",
        help="serve the files in DIR before the routes (GET/HEAD; index.html for / and "
        "folders; default: none)",
    )
    p.add_argument(
        "--shutdown-timeout",
        type=float,
        dest="shutdown_timeout",
        help="seconds graceful shutdown waits for connections (default 10)",
    )
    return p


_LIMIT_NAMES = frozenset(Limits.__dataclass_fields__)
_SERVER_NAMES = frozenset(ServerConfig.__dataclass_fields__) - {"limits"}


def asks_for_public(argv: Sequence[str]) -> bool:
    """Whether the command line names a public folder (``--public DIR``)."""
    try:
        args, _unknown = build_parser().parse_known_args(list(argv))
    except SystemExit:  # a malformed flag: argparse said why; nothing to serve
        return False
    return args.public is not None


def config_from_args(argv: Sequence[str], **overrides: Any) -> ServerConfig:
    """A :class:`ServerConfig` from ``overrides`` (``plezi.run(...)`` keywords) and flags.

    Flags win over keywords, as Iodine's command line wins over code. Unknown flags are left
    alone: the script may have its own.
    """
    args, _unknown = build_parser().parse_known_args(list(argv))
    values = {**overrides, **{k: v for k, v in vars(args).items() if v is not None}}
    unknown = set(values) - _LIMIT_NAMES - _SERVER_NAMES
    if unknown:
        raise ConfigError(f"unknown option(s): {', '.join(sorted(unknown))}")
    limits = Limits(**{k: v for k, v in values.items() if k in _LIMIT_NAMES})
    server = {k: v for k, v in values.items() if k in _SERVER_NAMES}
    if "workers" in server and server["workers"] < 1:
        raise ConfigError("--workers must be at least 1")
    if "port" in server and not 0 <= server["port"] <= 65535:
        raise ConfigError(f"invalid port {server['port']}")
    return ServerConfig(limits=limits, **server)


def main(argv: Sequence[str] | None = None) -> None:
    """``plezi script.py [flags]``: run a script as a plezi app (``python -m plezi`` too)."""
    import runpy
    import sys

    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help"):
        print(
            "usage: plezi SCRIPT.py [--port N] [--bind ADDR] [--public DIR] [--verbose] "
            "[limits...]\n"
        )
        build_parser().print_help()
        raise SystemExit(0 if args else 2)
    script, rest = args[0], args[1:]
    sys.argv = [script, *rest]
    runpy.run_path(script, run_name="__main__")
