"""The asyncio server: the only package that touches sockets and transports."""
