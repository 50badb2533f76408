"""Templates: ``render()`` in controllers, with Jinja2."""

from __future__ import annotations

import os
import sys
from typing import Any

__all__ = ["render", "set_templates"]

_folder: str | None = None
_env: Any = None


def default_folder() -> str:
    """``views/`` beside the main script (Plezi's default), else in the working directory."""
    main = sys.modules.get("__main__")
    base = os.path.dirname(os.path.abspath(getattr(main, "__file__", "") or "."))
    return os.path.join(base, "views")


def set_templates(folder: str) -> None:
    """Use ``folder`` for templates from now on."""
    global _folder, _env
    _folder, _env = folder, None


def _environment() -> Any:
    global _env
    if _env is None:
        import jinja2

        _env = jinja2.Environment(
            loader=jinja2.FileSystemLoader(_folder or default_folder()),
            autoescape=jinja2.select_autoescape(("html", "htm", "xml")),
        )
    return _env


def render(name: str, **context: Any) -> str | None:
    """Render template ``name`` (relative to the templates folder); ``None`` if it is missing."""
    import jinja2

    try:
        template = _environment().get_template(name)
    except jinja2.TemplateNotFound:
        return None
    return str(template.render(**context))
