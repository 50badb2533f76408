"""Types of the C helper ``_sendmany.c``: one buffer each to many sockets in few system calls."""

def send_all(fds: list[int], payloads: list[bytes], /) -> list[int] | None:
    """Send ``payloads[i]`` to socket ``fds[i]`` for each i, without blocking: ``None`` when all
    went out whole, else for each i the bytes sent or a negative errno."""

def mechanism() -> str:
    """``"io_uring"`` or ``"send"``: how this process sends a batch."""
