"""Keep tritonserver's files and shared memory from other local users.

The Python backend keeps request texts in shared-memory regions under /dev/shm, and sets their
mode to 0644 itself (a umask does not help: it calls fchmod). :func:`child_setup` therefore gives
tritonserver a mount namespace (inside a user namespace unless it runs as root) with a fresh tmpfs
of mode 0700 on /dev/shm: its regions are invisible outside tritonserver and its stubs, and vanish
with them. Where the kernel refuses namespaces, :func:`tighten_shm_regions` makes the regions
0600 once they exist.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

# Linux constants for unshare(2) and mount(2).
_CLONE_NEWNS, _CLONE_NEWUSER = 0x00020000, 0x10000000
_MS_NOSUID, _MS_NODEV, _MS_NOEXEC, _MS_REC, _MS_PRIVATE = 2, 4, 8, 1 << 14, 1 << 18


def child_setup(report_fd: int) -> Callable[[], None]:
    """A preexec_fn for tritonserver: a /dev/shm of its own, files private to this user, SIGTERM
    when the thread that started it dies.

    The child writes ``b"1"`` to ``report_fd`` when it got its own /dev/shm, ``b"0"`` when the
    kernel refused (then the parent falls back to :func:`tighten_shm_regions`). The umask keeps the
    files it creates (log, socket) this user's. libc is looked up here, in the parent: the child
    only makes system calls.
    """
    libc = ctypes.CDLL(None, use_errno=True)
    uid, gid, root = os.getuid(), os.getgid(), os.geteuid() == 0
    parent = os.getpid()

    def preexec() -> None:  # pragma: no cover - runs in the child between fork and exec
        os.umask(0o077)
        private = _private_dev_shm(libc, uid, gid, root)
        os.write(report_fd, b"1" if private else b"0")
        # After the namespaces: changing credentials would clear the parent-death signal.
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
        if os.getppid() != parent:  # the parent died before prctl: no signal will come
            os._exit(1)

    return preexec


def _private_dev_shm(libc: Any, uid: int, gid: int, root: bool) -> bool:  # pragma: no cover - in the child
    """Mount a tmpfs (mode 0700) on /dev/shm in a new mount namespace of this process; False if refused."""
    if libc.unshare(_CLONE_NEWNS if root else _CLONE_NEWUSER | _CLONE_NEWNS) != 0:
        return False
    if not root:  # map this user to itself in the new user namespace (setgroups must be denied first)
        try:
            for name, text in (("setgroups", "deny"), ("uid_map", f"{uid} {uid} 1"), ("gid_map", f"{gid} {gid} 1")):
                fd = os.open(f"/proc/self/{name}", os.O_WRONLY)
                try:
                    os.write(fd, text.encode())
                finally:
                    os.close(fd)
        except OSError:
            return False
    # Private propagation first, so the new mount stays in this namespace.
    if libc.mount(None, b"/", None, _MS_REC | _MS_PRIVATE, None) != 0:
        return False
    return libc.mount(b"tmpfs", b"/dev/shm", b"tmpfs", _MS_NOSUID | _MS_NODEV | _MS_NOEXEC, b"mode=0700") == 0


def tighten_shm_regions(prefix: str) -> None:
    """Where tritonserver could not get a /dev/shm of its own: make its regions 0600 once they exist."""
    for region in Path("/dev/shm").glob(f"{prefix}*"):
        with contextlib.suppress(OSError):
            region.chmod(0o600)
