"""plezi's version (one place: the package metadata is built from it)."""

__all__ = ["__version__"]

__version__ = "0.1.0"
