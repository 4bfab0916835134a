"""Which files only this user (or root) can have put where they are, and folders private to the user.

An asset is read only from a path no other local user can have written or swapped: no directory on
the way to it (as named, and after symlinks are followed) may be writable by everyone, except a
sticky one such as `/tmp` whose next entry on the path belongs to this user or root, and the file's
own directory may not be writable by everyone at all. Folders writable by a group or owned by
another user are the user's own choice to trust (a lab's shared asset folder) and are accepted.

Cache folders the harness creates are made with mode 0700 (`private_dir`).
"""
from __future__ import annotations

import os
import stat
from pathlib import Path

#----------------------------------------------------------------------------


# Why `path` could have been written or swapped by another local user, or None when it could not.
# `own_folder`: the path is a folder of this user's, which may lie directly in a sticky shared
# folder when this user (or root) owns it; a file there is always refused (anyone can make it first).
def untrusted_reason(path: str | Path, own_folder: bool = False) -> str | None:
    path = Path(os.path.abspath(os.path.expanduser(path)))
    for chain in (_chain(path), _chain(Path(os.path.realpath(path)))):
        reason = _chain_reason(chain, own_folder)
        if reason is not None:
            return reason
    try:
        st = os.stat(path)
    except OSError:
        return None                                     # nothing there: nothing to distrust yet
    if st.st_mode & stat.S_IWOTH:
        return f"{path} is writable by every user"
    return None


# Make `path` (and any missing parents) a folder only this user can enter (0700); an existing folder
# is kept as it is if no other user could have made or swapped it, otherwise refused. Returns it.
def private_dir(path: str | Path) -> Path:
    path = Path(os.path.abspath(os.path.expanduser(path)))
    missing = []
    probe = path
    while not probe.exists() and probe != probe.parent:
        missing.append(probe)
        probe = probe.parent
    for folder in reversed(missing):
        try:
            os.mkdir(folder, 0o700)
            os.chmod(folder, 0o700)                     # exact, whatever the umask
        except FileExistsError:
            pass                                        # made by a concurrent process: checked below
    if not path.is_dir():
        raise NotADirectoryError(f"{path}: expected a folder for the harness's cache")
    reason = untrusted_reason(path, own_folder=True)
    if reason is not None:
        raise PermissionError(f"refusing to use {path} as a cache folder: {reason}")
    return path


def _chain(path: Path) -> list[Path]:
    return [*reversed(path.parents), path]


# The first problem along a path from the root: a world-writable folder without the sticky bit; in a
# sticky world-writable folder, the next entry owned by another user, or the last entry itself unless
# `own_folder`.
def _chain_reason(chain: list[Path], own_folder: bool) -> str | None:
    trusted_owners = {0, os.geteuid()}
    for i, folder in enumerate(chain[:-1]):
        try:
            st = os.lstat(folder)
        except OSError:
            return None                                 # the rest does not exist
        if stat.S_ISLNK(st.st_mode) or not st.st_mode & stat.S_IWOTH:
            continue                                    # a link's own mode means nothing
        if not st.st_mode & stat.S_ISVTX:
            return f"{folder} is writable by every user"
        child = chain[i + 1]
        if i + 1 == len(chain) - 1 and not own_folder:
            return f"{child.name} lies directly in {folder}, which every user can write to"
        try:
            owner = os.lstat(child).st_uid
        except OSError:
            return None
        if owner not in trusted_owners:
            return f"{child} in the shared folder {folder} belongs to another user (uid {owner})"
    return None
