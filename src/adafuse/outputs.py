"""Output folders: checked before long work starts, so a read-only or missing place fails in one line at once."""

from __future__ import annotations

import errno
import os
import tempfile
from pathlib import Path

from adafuse.errors import UserError


def os_reason(error: OSError) -> str:
    """The operating system's words for an I/O error (``"No space left on device"``)."""
    return error.strerror or str(error)


def check_writable(folder: str | Path) -> Path:
    """Create ``folder`` (with its parents) and write and remove a probe file in it; a :class:`UserError` naming
    the folder and the OS reason if that fails."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise UserError(f"cannot write to {folder}: {os.strerror(errno.ENOTDIR)}")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=folder, prefix=".write-probe.")
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise UserError(f"cannot write to {folder}: {os_reason(e)}") from None
    return folder
