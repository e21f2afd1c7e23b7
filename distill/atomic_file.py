"""Write a file so that readers see the old content or the new one, never half of it, even after a crash.

The content goes to a temporary file in the same folder (so the rename never crosses file systems), is
flushed and fsync'ed, then renamed over the target with ``os.replace`` (atomic on POSIX), and the folder
is fsync'ed so the rename itself is durable. A process killed mid-write leaves the old file intact and a
``.<name>.<random>.tmp`` file behind, which no reader takes for the real one.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO


def temporary_name_prefix(path: Path) -> str:
    """The prefix of the temporary files written for ``path`` (hidden, never ``*.ckpt``/``*.json``)."""
    return f".{path.name}."


def fsync_folder(folder: Path) -> None:
    """Make a rename inside ``folder`` durable (no-op where folders cannot be opened, e.g. Windows)."""
    with contextlib.suppress(OSError):
        handle = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(handle)
        finally:
            os.close(handle)


@contextlib.contextmanager
def open_atomically(path: str | os.PathLike) -> Iterator[BinaryIO]:
    """A binary stream whose content replaces ``path`` when the ``with`` block ends without an exception.

    On an exception the temporary file is removed and ``path`` is untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=temporary_name_prefix(path), suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as stream:
            yield stream
            stream.flush()
            os.fsync(stream.fileno())
        os.chmod(temporary, 0o644)  # mkstemp makes it owner-only
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    fsync_folder(path.parent)


def write_atomically(path: str | os.PathLike, content: str | bytes) -> Path:
    """Write ``content`` (text as UTF-8, or bytes) to ``path`` atomically and durably; returns the path."""
    with open_atomically(path) as stream:
        stream.write(content.encode() if isinstance(content, str) else content)
    return Path(path)
