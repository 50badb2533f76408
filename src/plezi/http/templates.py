"""Templates: ``render()`` in controllers, with Jinja2.

The folder is ``views/`` beside the main script, however the app was started (``python app.py``
with autostart or ``plezi.run()``, ``plezi app.py``, ``python -m plezi app.py``), or the one
:func:`set_templates` names. A template that is not there is an error (:class:`TemplateNotFound`,
which a request answers with a 500 and a log line naming the folder), never a silent 404.
"""

from __future__ import annotations

import os
from typing import Any

from ..errors import PleziError

__all__ = ["TemplateNotFound", "folder", "render", "set_templates"]

_folder: str | None = None
_env: Any = None


class TemplateNotFound(PleziError, LookupError):
    """``render()`` found no such template in the templates folder; ``name`` is the missing
    one (the template asked for, or one it includes)."""

    def __init__(self, name: str, message: str) -> None:
        super().__init__(message)
        self.name = name


def _not_found(name: str, included_by: str | None = None) -> TemplateNotFound:
    where = folder()
    missing = "" if os.path.isdir(where) else " (that folder does not exist)"
    which = f"template {name!r}" + (f" (included by {included_by!r})" if included_by else "")
    return TemplateNotFound(
        name,
        f"{which} not found in {where}{missing}: create it there, or point "
        "plezi.http.templates.set_templates() at the templates folder",
    )


def default_folder() -> str:
    """``views/`` beside the main script (Plezi's default); in the working directory when there
    is no script of the app's (a REPL, ``python -c``, or a tool that imports the app: uvicorn,
    pytest ...)."""
    from ..mainscript import main_file, main_is_tool

    main = None if main_is_tool() else main_file()
    return os.path.join(os.path.dirname(main) if main else os.getcwd(), "views")


def folder() -> str:
    """The folder templates are read from (absolute)."""
    return os.path.abspath(_folder or default_folder())


def set_templates(folder: str) -> None:
    """Use ``folder`` for templates from now on."""
    global _folder, _env
    _folder, _env = folder, None


def _environment() -> Any:
    global _env
    if _env is None:
        import jinja2

        _env = jinja2.Environment(
            loader=jinja2.FileSystemLoader(folder()),
            autoescape=jinja2.select_autoescape(("html", "htm", "xml")),
        )
    return _env


def render(name: str, **context: Any) -> str:
    """Render template ``name`` (relative to the templates folder).

    Raises :class:`TemplateNotFound`, naming the folder searched, when it is not there."""
    import jinja2

    try:
        template = _environment().get_template(name)
    except jinja2.TemplateNotFound:
        raise _not_found(name) from None
    try:
        return str(template.render(**context))
    except jinja2.TemplateNotFound as exc:  # an {% include %} or {% extends %} that is missing
        raise _not_found(str(exc.name), name) from None
