"""Pub/sub tests. A package so that ``redis/conftest.py`` is imported under its own name."""
