"""The one exception type that reaches the user as a clean one-line message."""


class UserError(Exception):
    """A problem the user can fix (bad params, bad input, missing files).

    Stage scripts print its message on one line and exit non-zero; the message
    should name the problem and the fix.
    """


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (its type if it has none), for a one-line error."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
