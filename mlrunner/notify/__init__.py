"""Notifications (``notify:`` in params.yaml): the end of a run, each failed command, or the
first one, sent through apprise to any of its services (ntfy, Slack, Discord, Telegram,
email, a JSON webhook, the desktop...).

``targets`` loads and checks the targets (apprise imported there, lazily); ``notifier``
holds :class:`Notifier`, which tees the run's events and sends from a thread of its own,
so a slow or unreachable target never holds the run up (a warning, never an error).
"""

from mlrunner.notify.notifier import Notifier, end_message, failure_message
from mlrunner.notify.targets import INSTALL_HINT, Target, load_targets

__all__ = ["INSTALL_HINT", "Notifier", "Target", "end_message", "failure_message", "load_targets"]
