"""Starting plezi: the command line, running a server (one process or a master and workers),
autostart at the end of a script, ``plezi new``. Nothing in the package imports this layer,
except the public surface (``plezi/__init__.py``)."""
