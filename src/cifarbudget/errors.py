"""The one exception type that reaches the user as a clean one-line message."""


class UserError(Exception):
    """A problem the user can fix (bad params, bad input, missing files).

    Stage scripts print its message on one line and exit non-zero; the message
    should name the problem and the fix.
    """
