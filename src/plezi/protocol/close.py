"""WebSocket close status codes (RFC 6455 section 7.4 and the IANA registry)."""

from __future__ import annotations

import enum

__all__ = ["CloseCode", "is_valid_close_code"]


class CloseCode(enum.IntEnum):
    """Registered WebSocket close status codes.

    ``NO_STATUS``, ``ABNORMAL`` and ``TLS_HANDSHAKE`` are reserved for reporting
    purposes and must never be sent in a close frame.
    """

    NORMAL = 1000
    GOING_AWAY = 1001
    PROTOCOL_ERROR = 1002
    UNSUPPORTED_DATA = 1003
    NO_STATUS = 1005
    ABNORMAL = 1006
    INVALID_DATA = 1007
    POLICY_VIOLATION = 1008
    MESSAGE_TOO_BIG = 1009
    MANDATORY_EXTENSION = 1010
    INTERNAL_ERROR = 1011
    SERVICE_RESTART = 1012
    TRY_AGAIN_LATER = 1013
    BAD_GATEWAY = 1014
    TLS_HANDSHAKE = 1015


def is_valid_close_code(code: int) -> bool:
    """Return whether ``code`` may appear in a close frame on the wire.

    Valid: 1000-1003 and 1007-1014 (registered, sendable), 3000-3999 (IANA
    registered for libraries and frameworks) and 4000-4999 (private use).
    Invalid: 1004 (reserved), 1005, 1006 and 1015 (never sent), anything below
    1000, the unassigned 1016-2999 range and anything from 5000 up.
    """
    # PERF: two chained comparisons, no set/range object; called once per close frame.
    return 1000 <= code <= 1003 or 1007 <= code <= 1014 or 3000 <= code <= 4999
