"""Redis engine tests: plezi servers in subprocesses sharing a private redis-server."""
