"""Atomic folder writes: build in a hidden temp sibling, then rename into place.

A failure leaves no partial folder behind and an existing one untouched.
"""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Callable
from pathlib import Path


def check_target(out: Path, overwrite: bool) -> None:
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} exists (pass overwrite=True / --overwrite to replace it)")


def build_atomically(target: Path, build: Callable[[Path], None], overwrite: bool) -> None:
    """Run ``build(temp_folder)`` in a hidden sibling of ``target``, then rename it into place."""
    check_target(target, overwrite)
    target.parent.mkdir(parents=True, exist_ok=True)
    temp = target.parent / f".{target.name}.tmp-{uuid.uuid4().hex[:12]}"
    temp.mkdir()
    try:
        build(temp)
        if target.exists():
            retired = target.parent / f".{target.name}.old-{uuid.uuid4().hex[:12]}"
            target.rename(retired)
            temp.rename(target)
            shutil.rmtree(retired, ignore_errors=True)
        else:
            temp.rename(target)
    except BaseException:
        shutil.rmtree(temp, ignore_errors=True)
        raise
