"""The one exception type that reaches the user as a clean one-line message."""


class UserError(Exception):
    """A problem the user can fix (bad params, bad input, missing files).

    Stage scripts print its message on one line and exit non-zero; the message
    should name the problem and the fix.
    """

    def __init__(self, message: str):
        # One line even where it quotes a library's multi-line text (pickle's, urllib's).
        super().__init__(" ".join(str(message).split()))


class Interrupted(KeyboardInterrupt):
    """Ctrl-C during training; the message says what a rerun will do."""

    @classmethod
    def at(cls, name: str, step: int, saved_step: int | None, checkpoint: object,
           every: int) -> "Interrupted":
        if saved_step is None:
            return cls(f"{name} stopped at step {step:,}, before its first checkpoint (one every "
                       f"{every:,} steps): a rerun of `dvc repro` starts it over")
        return cls(f"{name} stopped at step {step:,}: rerun `dvc repro` to continue from the "
                   f"checkpoint of step {saved_step:,} ({checkpoint})")


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (its type if it has none), for a one-line error."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
