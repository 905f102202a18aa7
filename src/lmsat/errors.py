"""The one error type for user mistakes.

Anything the user can fix (a wrong path, a revision that does not exist, a rank
larger than the hidden size, ...) raises :class:`UserError`. The CLI prints its
message on one line and exits with code 2; programming errors keep their
traceback.
"""

from __future__ import annotations

EXIT_USER_ERROR = 2


class UserError(Exception):
    """A mistake in the user's input, with a message that says what to do.

    The message must be one line: what is wrong, then what to do about it.
    """

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(str(message).split()))


def require(condition: bool, message: str) -> None:
    """Raise :class:`UserError` with ``message`` unless ``condition`` holds."""
    if not condition:
        raise UserError(message)
