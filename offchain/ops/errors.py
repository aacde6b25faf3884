"""The one exception operator commands raise for bad input or an unusable environment."""

from __future__ import annotations


class OpsError(RuntimeError):
    """A problem the operator can fix; its message is printed as one line, without a traceback."""
