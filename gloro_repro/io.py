"""Atomic file output (a reader, or DVC, never sees a half-written file) and file digests."""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Iterator, Mapping

import numpy as np


class MismatchError(RuntimeError):
    """Files that must belong together do not, or one is unreadable; the message names them and the fix."""


@contextmanager
def atomic_open(path: str | Path, mode: str = "wb") -> Iterator[IO]:
    """Open a temporary file beside ``path``; on success it replaces ``path``, on error it is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, mode) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: str | Path, data) -> None:
    """Write ``data`` as indented JSON, atomically."""
    with atomic_open(path, "w") as handle:
        json.dump(data, handle, indent=2, sort_keys=True)
        handle.write("\n")


def file_digest(path: str | Path) -> str:
    """sha256 of a file's bytes: ties a run to its starting checkpoint, an export to its bounds."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def content_digest(arrays: Mapping[str, np.ndarray]) -> str:
    """sha256 over every array's name, dtype, shape and values, in the mapping's order: what the
    arrays hold, whatever bytes a file format wraps them in."""
    digest = hashlib.sha256()
    for key, array in arrays.items():
        array = np.ascontiguousarray(array)
        digest.update(f"{key}:{array.dtype.str}:{list(array.shape)};".encode())
        digest.update(memoryview(array).cast("B"))
    return digest.hexdigest()
