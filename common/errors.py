"""The one exception type for bad user input.

Every package raises :class:`InputError` (a ``ValueError``) with a one-line message that names
the problem and the fix; the CLI turns it into ``matscreen: error: ...`` and exit code 2.
"""


class InputError(ValueError):
    """Bad input from a user: message names the problem and how to fix it."""
