"""plezi as an ASGI application under uvicorn, and ASGI apps mounted under plezi routes.

A package, so that its ``conftest.py`` is imported as ``asgi.conftest`` and never shadows
``tests/conftest.py`` (which the test modules import as ``conftest``).
"""
