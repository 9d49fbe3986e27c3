"""Directories of the state folder: 0700, as the README promises, however they come to exist."""
from __future__ import annotations

import os
from pathlib import Path


def private_dir(path: Path) -> Path:
    """`path` as a 0700 directory; the parents it needs are created 0700 as well.

    (`Path.mkdir(parents=True)` gives the parents the umask's default mode, 0755.) Existing parents
    are left as they are: they may be the user's own directories.
    """
    missing = []
    probe = path
    while not probe.is_dir():
        missing.append(probe)
        probe = probe.parent
    for directory in reversed(missing):
        directory.mkdir(mode=0o700, exist_ok=True)
    os.chmod(path, 0o700)  # the umask may have stripped bits, or an older run left it open
    return path


def private_tree(root: Path) -> None:
    """Directories 0700 and files 0600 below `root`, for trees a library writes with the umask's modes."""
    for path in [root, *root.rglob("*")]:
        if path.is_symlink() or not (path.is_dir() or path.is_file()):
            continue
        want = 0o700 if path.is_dir() else 0o600
        if path.stat().st_mode & 0o777 != want:
            os.chmod(path, want)
