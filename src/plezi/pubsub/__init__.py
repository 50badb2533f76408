"""Pub/sub: local subscriptions, and engines that carry messages between processes."""
