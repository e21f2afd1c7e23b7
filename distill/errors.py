"""The one exception type that the command line turns into a single clear line."""

import re


class DistillError(Exception):
    """A user-facing error: bad configuration, a missing or mismatched file, an impossible request.

    The ``distill`` command prints its message as one line and exits with status 2, so the message
    must name the field or file at fault and say how to fix it.
    """


def load_failure_reason(error: BaseException) -> str:
    """One line saying why ``torch.load`` failed, for a ``DistillError`` message.

    A weights-only refusal spans many lines of advice; what matters is the type it refused
    ("refuses numpy.random.mtrand.RandomState"). Any other error gives its first line (truncated
    file, not a torch file, ...).
    """
    text = str(error).strip()
    refused = re.search(r"Unsupported (?:global|class):?\s*(?:GLOBAL\s+)?([\w.]+)", text) or re.search(
        r"but got <class '([\w.]+)'>", text
    )
    if refused:
        return f"refuses {refused.group(1)}"
    return text.splitlines()[0] if text else type(error).__name__
