"""The one error class users see.

Every error a user can cause (a bad config value, a missing checkpoint, an unknown character in a
prompt) is raised as :class:`TokenDiffError` with a message that names the bad value and the fix.
The CLI prints the message on one line and exits with status 2.
"""


class TokenDiffError(ValueError):
    """A problem with the user's input, named together with its fix."""
