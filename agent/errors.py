"""The root of the agent's own exceptions.

Every exception class of ``agent/`` derives from :class:`HallAgentError` (some also from the
built-in a caller catches them as, e.g. ``OSError``), so code and tests can tell the agent's
own errors from anything else. This module imports nothing of the agent: every package,
``agent/core`` and ``agent/config`` included, may use it.
"""

from __future__ import annotations


class HallAgentError(Exception):
    """The root of the agent's own exceptions."""
