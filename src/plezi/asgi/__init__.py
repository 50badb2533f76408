"""plezi as an ASGI application, and ASGI applications mounted under plezi routes.

Serve a plezi app (HTTP, WebSockets, Server-Sent Events) with any ASGI server (uvicorn,
hypercorn, granian ...)::

    # chat.py
    import plezi
    from plezi.asgi import application   # the routes plezi.route() adds

    plezi.route("/", Chat)

    # then: uvicorn chat:application

``ASGIApp(app, limits=..., allowed_origins=...)`` serves an explicit :class:`plezi.App`.

Mount an ASGI app (Starlette, FastAPI ...) under a plezi route::

    plezi.route("/api/*", plezi.asgi.mount(fastapi_app))

See ``docs/asgi.md`` for what differs from the native server.
"""

from __future__ import annotations

from .adapter import ASGIApp
from .mount import Lifespan, mount
from .types import ASGIApplication, ASGIMessage, Receive, Scope, Send

__all__ = [
    "ASGIApp",
    "ASGIApplication",
    "ASGIMessage",
    "Lifespan",
    "Message",
    "Receive",
    "Scope",
    "Send",
    "application",
    "mount",
]

#: The old name of :data:`ASGIMessage` (kept: ``plezi.asgi`` exported it; pub/sub has its own
#: ``Message``, hence the new name).
Message = ASGIMessage

#: The ASGI application of :data:`plezi.app` (the routes :func:`plezi.route` adds), with the
#: default :class:`plezi.Limits`: ``uvicorn myapp:application`` after
#: ``from plezi.asgi import application`` in ``myapp.py``.
application = ASGIApp()
