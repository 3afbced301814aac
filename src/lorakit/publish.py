"""Moving a finished output folder into place, with the permissions new files usually get.

Writers build an output in a staging folder beside its target and rename it into
place, so that a failure leaves no half-written folder. ``tempfile.mkdtemp``
creates the staging folder readable by its owner only, and safetensors writes its
files the same way. :func:`publish_folder` first gives them the permissions that
the process's umask gives a new file or folder (usually ``rw-r--r--`` and
``rwxr-xr-x``), so that a server running as another user can read the output.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path


def publish_folder(folder: Path, target: Path) -> None:
    """Move a finished ``folder`` to ``target``; an existing ``target`` is removed only once that worked.

    ``folder`` must be on the same file system as ``target`` (a staging folder beside it).
    """
    set_default_permissions(folder)
    if not target.exists():
        folder.rename(target)
        return
    backup = folder.with_name(f"{folder.name}.previous")
    target.rename(backup)
    try:
        folder.rename(target)
    except BaseException:
        backup.rename(target)
        raise
    shutil.rmtree(backup, ignore_errors=True)


def set_default_permissions(folder: Path) -> None:
    """Give ``folder`` and everything in it the permissions the umask gives new files and folders."""
    umask = current_umask()
    for path in [folder, *folder.rglob("*")]:
        if path.is_symlink():
            continue
        path.chmod((0o777 if path.is_dir() else 0o666) & ~umask)


def current_umask() -> int:
    """Return the process's umask, from ``/proc`` where Linux has it, else by setting and restoring it."""
    status = Path("/proc/self/status")
    if status.is_file():
        for line in status.read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    umask = os.umask(0o022)  # os.umask can only read the value by setting one
    os.umask(umask)
    return umask
