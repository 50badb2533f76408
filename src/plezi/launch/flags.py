"""The flags every plezi app accepts, parsed when the server starts (Plezi and Iodine style).

A flag plezi does not know is an error (exit status 2, with the closest known flag suggested),
unless the application declared that it parses flags of its own (:func:`allow_flags`). Everything
after a lone ``--`` is the application's, never plezi's. The ``plezi`` command is :mod:`.cli`.
"""

from __future__ import annotations

import argparse
import difflib
import os
import sys
from collections.abc import Sequence
from typing import Any

from ..config import Limits, ServerConfig
from ..errors import ConfigError

__all__ = [
    "allow_flags",
    "asks_for_public",
    "build_parser",
    "config_from_args",
    "script_help",
    "wants_help",
]

#: Flags the application parses itself (:func:`allow_flags`), and whether every unknown flag is
#: the application's.
_app_flags: set[str] = set()
_all_flags_are_apps = False


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


def build_parser(
    usage: str | None = None, description: str | None = None
) -> argparse.ArgumentParser:
    """The flags every plezi app accepts (``usage`` and ``description`` only change ``--help``).

    Abbreviations are off: the app may parse flags of its own from the same command line, and
    ``--pub`` must not silently mean ``--public``.
    """
    p = argparse.ArgumentParser(
        prog="plezi",
        usage=usage,
        description=description,
        add_help=False,
        allow_abbrev=False,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    g = p.add_argument_group("flags")
    g.add_argument(
        "-h", "--help", action="store_true", default=argparse.SUPPRESS, help="print this and exit"
    )
    g.add_argument(
        "-p", "--port", type=int, metavar="PORT", help="TCP port (default: $PORT or 3000)"
    )
    g.add_argument(
        "-b",
        "--bind",
        metavar="ADDR",
        help="address to bind, or a Unix socket path (default 0.0.0.0)",
    )
    g.add_argument(
        "-w",
        "--workers",
        type=int,
        metavar="N",
        help="worker processes (default: $WEB_CONCURRENCY or 1)",
    )
    g.add_argument(
        "--redis",
        metavar="URL",
        help="pub/sub through this Redis (default: $PL_REDIS_URL or $REDIS_URL)",
    )
    g.add_argument(
        "--slow-consumer",
        choices=("disconnect", "drop"),
        dest="slow_consumer",
        help="a client past --max-outgoing is disconnected (default) or its "
        "messages are dropped until it catches up",
    )
    g.add_argument(
        "--compression",
        choices=("on", "off", "broadcasts"),
        help="WebSocket permessage-deflate: on (default), off, or for published messages only",
    )
    g.add_argument("-v", "--verbose", action="store_true", default=None, help="log every request")
    g.add_argument(
        "--max-header",
        type=_size,
        metavar="SIZE",
        dest="max_header_size",
        help="largest request head (default 32k; 431 past it)",
    )
    g.add_argument(
        "--max-body",
        type=_size,
        metavar="SIZE",
        dest="max_body_size",
        help="largest request body (default 50m; 413 past it)",
    )
    g.add_argument(
        "--max-msg",
        type=_size,
        metavar="SIZE",
        dest="max_message_size",
        help="largest incoming WebSocket message (default 1m; close 1009 past it)",
    )
    g.add_argument(
        "--max-outgoing",
        type=_size,
        metavar="SIZE",
        dest="max_outgoing_buffer",
        help="bytes queued for one client before it is disconnected (default 4m)",
    )
    g.add_argument(
        "--max-conn",
        "-maxcl",
        type=int,
        metavar="N",
        dest="max_connections",
        help="open connections past which new ones get 503 (default: the open-file limit - 64)",
    )
    g.add_argument(
        "--timeout",
        type=float,
        metavar="SECONDS",
        dest="keepalive_timeout",
        help="idle keep-alive timeout in seconds (default 40)",
    )
    g.add_argument(
        "--min-body-rate",
        type=_rate,
        metavar="BYTES",
        dest="min_body_rate",
        help="bytes a second a request body must average after --header-timeout "
        "(default 1k, 0: none; 408 below it)",
    )
    g.add_argument(
        "--header-timeout",
        type=float,
        metavar="SECONDS",
        dest="header_timeout",
        help="seconds to receive a request head (default 10; 408 past it)",
    )
    g.add_argument(
        "--ping",
        type=float,
        metavar="SECONDS",
        dest="ping_interval",
        help="seconds of WebSocket silence before a server ping (default 40, 0: off)",
    )
    g.add_argument(
        "--origin",
        type=_origins,
        action="extend",
        dest="allowed_origins",
        metavar="ORIGIN",
        help="allow WebSocket upgrades only from this Origin (https://example.com, "
        "https://*.example.com; repeat or comma-separate for more; default: no check)",
    )
    g.add_argument(
        "--public",
        "-www",
        "-public",
        metavar="DIR",
        help="serve the files in DIR before the routes (GET/HEAD; index.html for / and "
        "folders; default: none)",
    )
    g.add_argument(
        "--shutdown-timeout",
        type=float,
        metavar="SECONDS",
        dest="shutdown_timeout",
        help="seconds graceful shutdown waits for connections (default 10)",
    )
    _tls_and_reload_flags(p)
    return p


def _tls_and_reload_flags(p: argparse.ArgumentParser) -> None:
    """TLS (``--tls-*``, Iodine's ``-tls``) and ``--reload``: the flags of docs/tls.md and
    docs/configuration.md's development section."""
    g = p.add_argument_group("TLS (HTTPS, WSS) and development")
    g.add_argument(
        "--tls-cert",
        "-tls-cert",
        metavar="FILE",
        dest="tls_cert",
        help="serve TLS with this PEM certificate chain (default: plain HTTP)",
    )
    g.add_argument(
        "--tls-key",
        "-tls-key",
        metavar="FILE",
        dest="tls_key",
        help="the certificate's PEM private key (default: in the --tls-cert file)",
    )
    g.add_argument(
        "--tls-self-signed",
        action="store_true",
        default=None,
        dest="tls_self_signed",
        help="serve TLS with a throwaway certificate for localhost (development only)",
    )
    g.add_argument(
        "-tls",
        action="store_true",
        default=None,
        dest="tls_on",
        help="Iodine's spelling: TLS with --tls-cert/--tls-key, else --tls-self-signed",
    )
    g.add_argument(
        "--reload",
        action="store_true",
        default=None,
        help="restart the server when a .py file, a template or a --reload-dir file "
        "changes (development only; not with --workers)",
    )
    g.add_argument(
        "--reload-dir",
        action="append",
        metavar="DIR",
        dest="reload_dirs",
        help="also restart when a file in DIR changes (repeat for more)",
    )


_LIMIT_NAMES = frozenset(Limits.__dataclass_fields__)
_SERVER_NAMES = frozenset(ServerConfig.__dataclass_fields__) - {"limits"}


def allow_flags(*flags: str) -> None:
    """Declare command-line flags the application parses itself, so plezi does not refuse them
    as unknown: ``allow_flags("--seed", "-n")``. With no argument, every flag plezi does not
    know is left to the application. Call it before the server starts (at module level when the
    script relies on autostart)."""
    global _all_flags_are_apps
    for flag in flags:
        if not flag.startswith("-") or flag.strip("-") == "":
            raise ConfigError(f"allow_flags({flag!r}): name the flag as typed, e.g. '--{flag}'")
    _app_flags.update(flags)
    if not flags:
        _all_flags_are_apps = True


def _plezis(argv: Sequence[str]) -> list[str]:
    """The part of ``argv`` plezi reads: everything before a lone ``--``."""
    argv = list(argv)
    return argv[: argv.index("--")] if "--" in argv else argv


def _is_flag(arg: str) -> bool:
    if len(arg) < 2 or not arg.startswith("-"):
        return False
    try:
        float(arg)  # a negative number is a value, not a flag
    except ValueError:
        return True
    return False


def _check_unknown(parser: argparse.ArgumentParser, leftovers: list[str]) -> None:
    """Refuse the first flag in ``leftovers`` that neither plezi nor the application knows.

    Words that are not flags are left alone: they may be values of the application's flags, or
    arguments of its own."""
    if _all_flags_are_apps:
        return
    for arg in leftovers:
        name = arg.split("=", 1)[0]
        if not _is_flag(arg) or name in _app_flags:
            continue
        # (argparse has no public list of its option strings)
        known = [o for a in parser._actions for o in a.option_strings]
        close = difflib.get_close_matches(name, known, n=1, cutoff=0.75)
        if close:
            raise ConfigError(f"unknown flag {name}; did you mean {close[0]}?")
        raise ConfigError(
            f"unknown flag {name}; --help lists plezi's flags (if the app reads {name} "
            f"itself, call plezi.allow_flags({name!r}) before the server starts)"
        )


def wants_help(argv: Sequence[str]) -> bool:
    """Whether the command line asks for help (``-h`` or ``--help`` before any ``--``, unless
    the application claimed that flag with :func:`allow_flags`)."""
    plezis = _plezis(argv)
    return any(f in plezis and f not in _app_flags for f in ("-h", "--help"))


def script_help(script: str | None = None) -> str:
    """``python SCRIPT.py --help``: the usage line and the flags every plezi script accepts."""
    name = os.path.basename(script if script is not None else sys.argv[0]) or "SCRIPT.py"
    return build_parser(
        usage=f"python {name} [flags]",
        description="Serve this plezi application until Ctrl+C (SIGINT) or SIGTERM.",
    ).format_help()


def asks_for_public(argv: Sequence[str]) -> bool:
    """Whether the command line names a public folder (``--public DIR``)."""
    try:
        args, _unknown = build_parser().parse_known_args(_plezis(argv))
    except SystemExit:  # a malformed flag: argparse said why; nothing to serve
        return False
    return args.public is not None


def config_from_args(argv: Sequence[str], **overrides: Any) -> ServerConfig:
    """A :class:`ServerConfig` from ``overrides`` (``plezi.run(...)`` keywords) and flags.

    Flags win over keywords, as Iodine's command line wins over code. A flag plezi does not
    know is a :class:`ConfigError` unless the application declared it (:func:`allow_flags`).
    """
    parser = build_parser()
    args, leftovers = parser.parse_known_args(_plezis(argv))
    _check_unknown(parser, leftovers)
    flags = {k: v for k, v in vars(args).items() if v is not None and k != "help"}
    values = {**overrides, **flags}
    if values.pop("tls_on", False) and values.get("tls_cert") is None:
        values["tls_self_signed"] = True  # Iodine's -tls alone: a development certificate
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
