"""Writing a file so that a crash leaves either the old one or the whole new one.

Every file a node rewrites (its key and certificate, node.json, settings, the audit log's head,
the store's blobs) goes through ``write_atomic``: a temporary file in the same folder, written,
fsynced, renamed into place (or hard-linked, for a file that must not be overwritten), and the
folder fsynced so the rename survives a power cut. The temporary file's name starts with
``prefix`` (a dot by default: hidden), so a folder's owner can recognise and remove leftovers.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

__all__ = ["fsync_dir", "write_atomic"]


def write_atomic(path: Path, data: bytes | bytearray, mode: int = 0o600, *, exclusive: bool = False,
                 prefix: str = ".", sync_folder: bool = True) -> bool:
    """Put ``data`` at ``path`` (permissions ``mode``, whatever the umask). ``exclusive``:
    only if ``path`` does not exist yet; False then, with nothing written (two processes
    creating the same file at once cannot both win). ``sync_folder=False`` skips the folder's
    fsync, for a file rewritten often whose older version is as good after a power cut (the
    audit log's head, rewritten at every entry). True when written."""
    tmp = path.with_name(f"{prefix}{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        try:
            if hasattr(os, "fchmod"):
                os.fchmod(fd, mode)  # the umask may have taken bits off; never adds any
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        if exclusive:
            try:
                os.link(tmp, path)
            except FileExistsError:
                return False
            finally:
                os.unlink(tmp)
        else:
            os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if sync_folder:
        fsync_dir(path.parent)
    return True


def fsync_dir(directory: Path) -> None:
    """Make a rename in ``directory`` durable; a no-op where folders cannot be opened
    (Windows)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
