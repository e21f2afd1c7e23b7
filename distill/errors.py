"""The one exception type that the command line turns into a single clear line."""


class DistillError(Exception):
    """A user-facing error: bad configuration, a missing or mismatched file, an impossible request.

    The ``distill`` command prints its message as one line and exits with status 2, so the message
    must name the field or file at fault and say how to fix it.
    """
