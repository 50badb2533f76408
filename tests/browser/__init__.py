"""End-to-end tests of the browser client in headless Chromium.

A package, so that its ``conftest.py`` is imported as ``browser.conftest`` and never shadows
``tests/conftest.py``; the shared helpers come from ``tests/helpers.py`` (``from helpers import``).
"""
