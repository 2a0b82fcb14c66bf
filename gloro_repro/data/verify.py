"""Checksum verification of original dataset files, with errors that say what to do."""
from __future__ import annotations

from pathlib import Path

from torchvision.datasets.utils import calculate_md5


class DataIntegrityError(RuntimeError):
    """A dataset file is missing, truncated or corrupt."""


def verify_file(path: Path, md5: str) -> Path:
    """Raise ``DataIntegrityError`` unless ``path`` exists and has checksum ``md5``."""
    path = Path(path)
    if not path.is_file():
        raise DataIntegrityError(
            f"missing dataset file {path} (expected md5 {md5}); download it again, or pass --from DIR "
            f"with the original files")
    actual = calculate_md5(path)
    if actual != md5:
        raise DataIntegrityError(
            f"dataset file {path} is truncated or corrupt: md5 {actual}, expected {md5}; delete it and "
            f"download again, or pass --from DIR with the original files")
    return path
