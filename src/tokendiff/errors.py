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
