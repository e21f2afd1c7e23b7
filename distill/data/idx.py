"""Reader of the idx format (MNIST, Fashion-MNIST), gzipped or not.

An idx file is: two zero bytes, a type code (0x08 = unsigned byte), the number of dimensions, one
big-endian int32 per dimension, then the values in C order.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np

from distill.errors import DistillError

GZIP_MAGIC = b"\x1f\x8b"
UNSIGNED_BYTE = 0x08


def read_idx(path: Path, fix: str) -> np.ndarray:
    """The array stored in an idx (or idx.gz) file of unsigned bytes.

    Args:
        path: the file; gzip is recognised from its first bytes, not its name.
        fix: what to tell the user to do when the file is unreadable (ends the error line).

    Returns:
        A uint8 array with the file's shape (``[N, H, W]`` images, ``[N]`` labels).
    """
    try:
        raw = path.read_bytes()
        if raw[:2] == GZIP_MAGIC:
            raw = gzip.decompress(raw)
    except (OSError, EOFError, gzip.BadGzipFile) as error:
        raise DistillError(f"{path}: cannot read it ({error}); {fix}") from None
    if len(raw) < 4 or raw[:2] != b"\x00\x00" or raw[2] != UNSIGNED_BYTE:
        raise DistillError(f"{path}: not an idx file of unsigned bytes (header {raw[:4].hex()}); {fix}")
    dimensions = raw[3]
    header = 4 + 4 * dimensions
    shape = tuple(int(size) for size in np.frombuffer(raw[4:header], dtype=">i4")) if len(raw) >= header else ()
    expected = header + int(np.prod(shape)) if len(shape) == dimensions else None
    if expected is None or len(raw) != expected:
        raise DistillError(
            f"{path}: truncated or corrupt idx file ({len(raw)} bytes, expected "
            f"{expected if expected is not None else 'a longer header'}); {fix}"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)
