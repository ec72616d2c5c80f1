"""The error classes users see.

Every error a user can cause (a bad config value, a missing checkpoint, an unknown character in a
prompt) is raised as :class:`TokenDiffError` with a message that names the bad value and the fix.
The CLI prints the message on one line and exits with status 2 (:class:`Interrupted`: 130, the
shell's code for Ctrl-C).
"""


class TokenDiffError(ValueError):
    """A problem with the user's input, named together with its fix."""

    exit_status = 2


class Interrupted(TokenDiffError):
    """Ctrl-C stopped the work; the message says what was saved and how to continue."""

    exit_status = 130


def first_line(exc: BaseException, limit: int = 160) -> str:
    """The first line of an error's message (at most ``limit`` characters), or its type's name when it has
    none: what a one-line message quotes of an error a library raised."""
    text = str(exc).strip()
    return text.splitlines()[0][:limit] if text else type(exc).__name__
