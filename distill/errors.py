"""The one exception type that the command line turns into a single clear line."""


class DistillError(ValueError):
    """A user-facing error: bad configuration, a missing or mismatched file, an impossible request.

    The ``distill`` command prints its message as one line and exits with status 2, so the message
    must name the field or file at fault, what was given, what is expected, and how to fix it.
    It is a ``ValueError`` (bad input), so code that guards against bad values catches it too.
    """
