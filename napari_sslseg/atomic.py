"""Outputs that are complete or absent: written beside the target, checked, then renamed over it.

A full disk makes writers fail half-way, and SimpleITK does not even raise on a short write.
Each output is therefore written into its own temporary folder ``.<name>.<random>.tmp`` in the
target folder (unique, so concurrent saves cannot collide; the real name inside it, so writers
that pick the format from the suffix, or write a companion data file as MHD does, work
unchanged), flushed to disk, read back, and only then renamed over the old file. On any failure
the temporaries go and the old files stay as they were.
"""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from .errors import InputError

#: A temporary left by a killed process is removed by the next save next to it after this long.
STALE_SECONDS = 3600.0

Write = Callable[[Path], None]  # writes the file at the given path
Check = Callable[[Path], None]  # raises if the file at the given path is not what was meant


def _fsync(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:  # folders cannot be synced on every system
        pass
    finally:
        os.close(fd)


def remove_stale(target: Path, max_age: float = STALE_SECONDS) -> None:
    """Remove temporaries of ``target`` that a killed process left, once they are old enough."""
    now = time.time()
    for tmp in target.parent.glob(f".{target.name}.*.tmp"):
        try:
            if now - tmp.stat().st_mtime > max_age:
                shutil.rmtree(tmp) if tmp.is_dir() else tmp.unlink()
        except OSError:
            pass


def replace(outputs: Sequence[tuple[Path, Write, Check]], error: type[InputError] = InputError) -> list[Path]:
    """Write every output to a temporary, check them all, then rename them all over their targets.

    Args:
        outputs: (target, write, check) per file; the target's folder is created when needed.
        error: the error raised, with one line, when a write or a check fails.

    Returns:
        The targets, written.
    """
    temps: list[Path] = []
    staged: list[tuple[Path, Path]] = []
    created: list[Path] = []  # folders made here, removed again if nothing lands in them
    target, renaming = Path(), False
    try:
        for target, write, check in outputs:
            target = Path(target)
            created += [p for p in (target.parent, *target.parent.parents) if not p.exists()][::-1]
            target.parent.mkdir(parents=True, exist_ok=True)
            remove_stale(target)
            tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
            temps.append(tmp)
            write(tmp / target.name)
            for f in tmp.iterdir():
                _fsync(f)
            try:
                check(tmp / target.name)
            except (InputError, OSError, RuntimeError, EOFError, ValueError) as exc:
                raise _Incomplete(_reason(exc, f"Cannot read {tmp / target.name}: ")) from None
            staged.append((target, tmp))
        renaming = True  # from here on a failure may leave some targets replaced
        for target, tmp in staged:
            # companions (an MHD's .raw) first: the header is renamed when its data is in place
            for f in sorted(tmp.iterdir(), key=lambda f: f.name == target.name):
                os.replace(f, target.parent / f.name)
        for target, _ in staged:
            _fsync(target.parent)
    except (_Incomplete, InputError, OSError, RuntimeError) as exc:
        # judged while the temporaries still take their space; a refusal (permissions, say) is no full disk
        full = not (isinstance(exc, OSError) and exc.errno != errno.ENOSPC) and _disk_full(target.parent)
        for tmp in temps:
            shutil.rmtree(tmp, ignore_errors=True)
        for folder in reversed(created):
            try:
                folder.rmdir()
            except FileNotFoundError:
                continue
            except OSError:
                break
        if full:  # writers word a full disk many ways (torch: "unexpected pos 896 vs 790"), or not at all
            reason = "the disk is full"
        else:
            reason = f"it read back incomplete: {exc}" if isinstance(exc, _Incomplete) else _reason(exc)
        kept = "" if renaming else " The previous file is kept." if target.exists() else " Nothing was written."
        raise error(f"Cannot write {target}: {reason}.{kept}") from None
    finally:
        for tmp in temps:
            shutil.rmtree(tmp, ignore_errors=True)
    return [Path(t) for t, _, _ in outputs]


def _disk_full(folder: Path) -> bool:
    try:
        return shutil.disk_usage(folder).free < 1 << 20
    except OSError:
        return False


class _Incomplete(Exception):
    """A written file that does not read back as written."""


def _reason(exc: BaseException, drop: str = "") -> str:
    """One short line from an exception: the system's words for an OSError, else its last line
    (without ``drop``, the temporary's name)."""
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    lines = str(exc).replace(drop, "").strip().splitlines()
    return (lines[-1] if lines else type(exc).__name__).strip().rstrip(".")[:200]
