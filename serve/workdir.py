"""Work directories of `serve`: private, owner-locked, and removed after a `kill -9` at the next start.

Each server gets ``modcompress-serve-XXXX`` under the temporary directory (mode 0700) and holds an
``flock`` on ``owner.lock`` inside for as long as it serves. The kernel drops the lock when the
process dies, however it dies, so :func:`remove_stale_workdirs` can tell a directory whose server
was killed from a live one, and never touches a directory without that lock file.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import shutil
import tempfile
from pathlib import Path

LOGGER = logging.getLogger(__name__)

WORKDIR_PREFIX = "modcompress-serve-"
OWNER_LOCK = "owner.lock"
# Where a server notes the prefix of its /dev/shm regions, for the cleanup after a kill.
SHM_PREFIX_FILE = "shm-prefix"


def claim_workdir() -> tuple[Path, int]:
    """A new private (0700) work directory, and the open descriptor that holds its owner lock.

    Keep the descriptor open while serving from the directory; close it after removing the
    directory. The lock file gets its final name only once locked, so a sweep never sees it free.
    """
    workdir = Path(tempfile.mkdtemp(prefix=WORKDIR_PREFIX))
    staging = workdir / f"{OWNER_LOCK}.new"
    fd = os.open(staging, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.write(fd, f"{os.getpid()}\n".encode())
        os.rename(staging, workdir / OWNER_LOCK)
    except BaseException:
        os.close(fd)
        shutil.rmtree(workdir, ignore_errors=True)
        raise
    return workdir, fd


def remove_stale_workdirs(root: Path | None = None) -> list[Path]:
    """Remove the work directories (and shared memory) that killed `serve` processes left behind.

    Only directories named ``modcompress-serve-*`` under ``root`` (default: the temporary
    directory), owned by this user, not symlinks, holding an owner lock (:func:`claim_workdir`)
    that no live process holds. Anything else, a foreign directory or one of a running server, is
    left alone. Returns the directories removed.
    """
    removed = []
    for path in Path(root or tempfile.gettempdir()).glob(f"{WORKDIR_PREFIX}*"):
        try:
            if path.is_symlink() or not path.is_dir() or path.stat().st_uid != os.getuid():
                continue
            fd = os.open(path / OWNER_LOCK, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError:  # gone meanwhile, or no owner lock: not a directory of ours
            continue
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:  # its server is alive
                continue
            with contextlib.suppress(OSError):
                remove_shm_regions((path / SHM_PREFIX_FILE).read_text().strip())
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
        finally:
            os.close(fd)
    if removed:
        LOGGER.info("removed %d work director%s left by killed servers: %s", len(removed),
                    "y" if len(removed) == 1 else "ies", ", ".join(map(str, removed)))
    return removed


def remove_shm_regions(prefix: str) -> None:
    """Unlink /dev/shm regions named ``prefix*`` (ours: the prefix holds a random token)."""
    if not prefix.startswith("modcompress_"):
        return
    for region in Path("/dev/shm").glob(f"{prefix}*"):
        with contextlib.suppress(OSError):
            region.unlink()
