"""Several scans at once: a manifest CSV or a folder of ``*_image`` / ``*_label`` files.

A manifest lists one scan a row::

    image,labels,slices,axis
    scans/a.nii.gz,labels/a.nii.gz,10;20;30,0
    scans/b.nii.gz,,,

``labels`` may be empty (an unlabelled scan); ``slices`` (annotated slices, separated by ``;``,
spaces or commas) and ``axis`` are optional. Relative paths are relative to the manifest's folder.

A folder pairs ``NAME_image.EXT`` (or plain ``NAME.EXT``) with ``NAME_label.EXT`` (or
``NAME_labels.EXT``); an image without a label file is unlabelled.
"""

from __future__ import annotations

import csv
import os
import re
from dataclasses import dataclass
from pathlib import Path

from .errors import InputError
from .io import VOLUME_SUFFIXES

#: Suffixes that mark a label file in a folder, and an image file's optional one.
_LABEL_SUFFIXES = ("_labels", "_label")
_IMAGE_SUFFIX = "_image"


@dataclass(frozen=True)
class Scan:
    """One scan of a cohort, as listed; nothing is read."""

    name: str  # unique within the cohort: the output subfolder of its predictions
    image: Path  # volume file or DICOM folder
    labels: Path | None = None  # label volume on the image's grid; None = unlabelled
    slices: tuple[int, ...] | None = None  # annotated slices; None = every slice holding a label
    axis: int | None = None  # slice axis; None = the default (coarsest spacing, or the model's)


def _stem(path: Path) -> str:
    name = path.name
    for suffix in sorted(VOLUME_SUFFIXES, key=len, reverse=True):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


def is_cohort(path: str | os.PathLike) -> bool:
    """A manifest (``.csv``) or a folder holding volume files, as opposed to one volume (a file or a
    DICOM series folder)."""
    p = Path(path)
    if p.suffix.lower() == ".csv":
        return True
    return p.is_dir() and any(f.is_file() and f.name.lower().endswith(VOLUME_SUFFIXES) for f in p.iterdir())


def _parse_slices(text: str, where: str) -> tuple[int, ...] | None:
    text = (text or "").strip()
    if not text:
        return None
    try:
        return tuple(int(s) for s in re.split(r"[;,\s]+", text) if s)
    except ValueError:
        raise InputError(f"{where}: slices takes slice numbers separated by ';', e.g. 10;20;30; got '{text}'.") from None


def _unique_names(names: list[str]) -> list[str]:
    """``names`` with a repeated one numbered (``a``, ``a-2``), so each scan has its own folder."""
    seen: dict[str, int] = {}
    out = []
    for n in names:
        seen[n] = seen.get(n, 0) + 1
        out.append(n if seen[n] == 1 else f"{n}-{seen[n]}")
    return out


def read_manifest(path: str | os.PathLike) -> list[Scan]:
    """The scans of a manifest CSV (columns ``image``, ``labels``, optional ``slices``, ``axis``)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"The manifest {path} does not exist.")
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        columns = [c.strip().lower() for c in reader.fieldnames or []]
        if "image" not in columns:
            raise InputError(f"The manifest {path} has no 'image' column (its columns: {', '.join(columns) or 'none'}); "
                             "the first line names the columns: image,labels,slices,axis.")
        rows = [{(k or "").strip().lower(): (v or "").strip() for k, v in row.items()} for row in reader]
    rows = [r for r in rows if r.get("image")]
    if not rows:
        raise InputError(f"The manifest {path} lists no scan.")
    base = path.parent
    scans, names = [], []
    for line, row in enumerate(rows, start=2):
        where = f"{path.name}, line {line}"
        axis_text = row.get("axis", "")
        if axis_text and axis_text not in ("0", "1", "2"):
            raise InputError(f"{where}: axis takes 0, 1 or 2; got '{axis_text}'.")
        image = base / row["image"]
        labels = base / row["labels"] if row.get("labels") else None
        slices = _parse_slices(row.get("slices", ""), where)
        if slices is not None and labels is None:
            raise InputError(f"{where}: slices are named but no labels file.")
        scans.append((image, labels, slices, int(axis_text) if axis_text else None))
        names.append(_stem(image).removesuffix(_IMAGE_SUFFIX) or f"scan{line - 1}")
    return [Scan(n, *s) for n, s in zip(_unique_names(names), scans)]


def pair_folder(folder: str | os.PathLike) -> list[Scan]:
    """The scans of a folder: each image with its ``_label`` file, where it has one, by name."""
    folder = Path(folder)
    files = sorted(f for f in folder.iterdir() if f.is_file() and f.name.lower().endswith(VOLUME_SUFFIXES)
                   and not f.name.startswith("."))
    images: dict[str, Path] = {}
    labels: dict[str, Path] = {}
    for f in files:
        stem = _stem(f)
        low = stem.lower()
        label_suffix = next((s for s in _LABEL_SUFFIXES if low.endswith(s)), None)
        if label_suffix:
            labels[stem[: -len(label_suffix)]] = f
        else:
            images[stem[: -len(_IMAGE_SUFFIX)] if low.endswith(_IMAGE_SUFFIX) else stem] = f
    if not images:
        raise InputError(f"The folder {folder} holds no image volume ({', '.join(VOLUME_SUFFIXES)}).")
    orphans = sorted(set(labels) - set(images))
    if orphans:
        raise InputError(f"In {folder}, label files without an image: {', '.join(labels[k].name for k in orphans)}.")
    return [Scan(key, images[key], labels.get(key)) for key in sorted(images)]


def scans_of(source: str | os.PathLike) -> list[Scan]:
    """The scans of a manifest CSV or a folder."""
    p = Path(source)
    if p.suffix.lower() == ".csv":
        return read_manifest(p)
    if not p.is_dir():
        raise InputError(f"{p} is neither a manifest (.csv) nor a folder of scans.")
    return pair_folder(p)


# ----- training on a cohort: volumes memory-mapped from an uncompressed cache -----

#: Format of the cache entries; a change makes old entries be written again.
_CACHE_VERSION = 1


def _cache_key(scan: Scan, channel: int | None) -> str:
    """A name for ``scan``'s cache entry that changes when its files do."""
    import hashlib

    parts = [str(_CACHE_VERSION), str(channel)]
    for p in (scan.image, scan.labels):
        if p is None:
            parts.append("-")
            continue
        st = Path(p).stat()
        parts += [str(Path(p).resolve()), str(st.st_size), str(st.st_mtime_ns)]
    digest = hashlib.sha1("|".join(parts).encode()).hexdigest()[:12]
    return f"{scan.name}-{digest}"


def _write_entry(scan: Scan, entry: Path, channel: int | None) -> None:
    """Read ``scan`` once, check it, and store its arrays uncompressed (``.npy``) with its spacing."""
    import json
    import shutil
    import tempfile

    import numpy as np

    from .data import check_labels
    from .io import read_volume

    image, geom = read_volume(scan.image, channel)
    labels = None
    if scan.labels is not None:
        labels, lgeom = read_volume(scan.labels)
        differences = lgeom.differences(geom)
        if differences:
            raise InputError(f"{scan.labels}: the labels are not on the image's grid ({'; '.join(differences)}, "
                             "labels vs image); resample them onto the image first.")
        labels = check_labels(labels, image.shape)  # integer classes: what is mapped is used as it is
    entry.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{entry.name}.", suffix=".tmp", dir=entry.parent))
    try:
        np.save(tmp / "image.npy", image)
        if labels is not None:
            np.save(tmp / "labels.npy", labels)
        (tmp / "volume.json").write_text(json.dumps({"spacing_zyx": list(geom.spacing_zyx), "image": str(scan.image)}), encoding="utf-8")
        try:
            os.replace(tmp, entry)
        except OSError:  # another process (a torchrun rank) wrote the same entry first
            if not (entry / "volume.json").exists():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def load_volumes(scans: list[Scan], cache: str | os.PathLike, channel: int | None = None,
                 window: tuple[float, float] | None = None, axis: int | None = None, progress=None) -> list:
    """The scans as :class:`~napari_sslseg.data.Volume` s whose arrays are memory-mapped.

    Each scan is read once (compressed NIfTI, DICOM ...) and stored uncompressed in ``cache``; its
    arrays are then mapped from there, so a slice is read from disk when a batch needs it and the
    operating system keeps in memory what is used often: a cohort of hundreds of scans trains in
    the memory of a few. Entries are reused while the scan's files are unchanged (a resumed run,
    other torchrun ranks on the same machine).

    Args:
        scans: the cohort (:func:`scans_of`).
        cache: folder of the uncompressed copies.
        channel: the channel of multichannel images.
        window: a fixed intensity window (CT), else percentiles per scan.
        axis: the slice axis where a scan names none.
        progress: called with (done, total) after each scan.
    """
    import json

    import numpy as np

    from .data import Volume

    cache = Path(cache)
    volumes = []
    for i, scan in enumerate(scans):
        entry = cache / _cache_key(scan, channel)
        if not (entry / "volume.json").exists():
            _write_entry(scan, entry, channel)
        meta = json.loads((entry / "volume.json").read_text(encoding="utf-8"))
        image = np.load(entry / "image.npy", mmap_mode="r")
        labels = np.load(entry / "labels.npy", mmap_mode="r") if (entry / "labels.npy").exists() else None
        ax = scan.axis if scan.axis is not None else axis
        try:
            volumes.append(Volume(image, tuple(meta["spacing_zyx"]), labels, list(scan.slices) if scan.slices else None,
                                  ax, scan.name, window))
        except InputError as exc:
            raise InputError(f"{scan.image}: {exc}") from None
        if progress is not None:
            progress(i + 1, len(scans))
    return volumes
