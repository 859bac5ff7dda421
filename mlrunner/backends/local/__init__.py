"""The local backend: commands in a process pool over the allocator's slots."""

from mlrunner.backends.local.loop import LocalBackend

__all__ = ["LocalBackend"]
