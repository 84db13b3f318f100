"""Crash-safe file writes: a file is replaced whole or not at all, and the replacement survives a
power cut (written under a temporary name, fsynced, renamed, the directory fsynced).

Key files (``vm.bundle.keys``), the channel's metadata (``vm.tools.publish``) and the device's
update state and bundles (``vm.update``) are all written this way.
"""
from __future__ import annotations

import os
import secrets
from pathlib import Path


def write_temp(path: Path, data: bytes, *, secret: bool = False) -> Path:
    """Write ``data`` to a new temporary file beside ``path`` (mode 0600 from creation if
    ``secret``, else 0644), flushed to disk; the caller renames it into place."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600 if secret else 0o644)
    try:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return tmp


def fsync_dir(path: Path) -> None:
    """Flush a directory's entries (renames, creations, removals) to disk."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: str | os.PathLike, data: bytes, *, secret: bool = False) -> None:
    """Replace ``path`` with ``data`` atomically and durably (its directory is created if missing)."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = write_temp(target, data, secret=secret)
    try:
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(target.parent)
