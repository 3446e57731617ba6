"""Volumes in and out with SimpleITK: NIfTI, NRRD, MHA/MHD and DICOM series.

Arrays come out in SimpleITK's (z, y, x) order. The geometry (spacing, origin,
direction) travels beside the array so that anything written back lands on the
source image's exact grid.
"""

from __future__ import annotations

import gzip
import os
import struct
import warnings
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from .errors import InputError

#: Suffixes we read and write as single files.
VOLUME_SUFFIXES = (".nii", ".nii.gz", ".nrrd", ".nhdr", ".mha", ".mhd")


@dataclass(frozen=True)
class Geometry:
    """Physical placement of a voxel grid, in SimpleITK's (x, y, z) order."""

    size: tuple[int, ...]  # voxels along x, y, z
    spacing: tuple[float, ...]  # mm per voxel along x, y, z
    origin: tuple[float, ...]  # physical position of voxel (0, 0, 0), mm
    direction: tuple[float, ...]  # 3x3 direction cosines, row-major

    @classmethod
    def of(cls, image: sitk.Image) -> "Geometry":
        return cls(
            tuple(image.GetSize()),
            tuple(float(s) for s in image.GetSpacing()),
            tuple(float(o) for o in image.GetOrigin()),
            tuple(float(d) for d in image.GetDirection()),
        )

    @property
    def shape(self) -> tuple[int, ...]:
        """Array shape, (z, y, x)."""
        return tuple(reversed(self.size))

    @property
    def spacing_zyx(self) -> tuple[float, ...]:
        return tuple(reversed(self.spacing))

    @property
    def origin_zyx(self) -> tuple[float, ...]:
        return tuple(reversed(self.origin))

    def same_grid(self, other: "Geometry", tol: float = 1e-3) -> bool:
        return (
            self.size == other.size
            and np.allclose(self.spacing, other.spacing, rtol=tol, atol=tol)
            and np.allclose(self.origin, other.origin, rtol=tol, atol=tol * 10)
            and np.allclose(self.direction, other.direction, atol=tol)
        )

    def describe(self) -> str:
        sp = "x".join(f"{s:g}" for s in self.spacing)
        return f"{'x'.join(map(str, self.size))} voxels at {sp} mm"

    def to_dict(self) -> dict:
        return {k: list(getattr(self, k)) for k in ("size", "spacing", "origin", "direction")}

    @classmethod
    def from_dict(cls, d: dict) -> "Geometry":
        return cls(*(tuple(d[k]) for k in ("size", "spacing", "origin", "direction")))


def is_volume_path(path: str | os.PathLike) -> bool:
    p = str(path).lower()
    return p.endswith(VOLUME_SUFFIXES) or p.endswith(".dcm") or os.path.isdir(path)


def _read_dicom_folder(folder: Path, member: Path | None = None) -> sitk.Image:
    """The largest series in ``folder``, or the one holding the file ``member``."""
    reader = sitk.ImageSeriesReader()
    series = reader.GetGDCMSeriesIDs(str(folder))
    if not series:
        raise InputError(f"{folder} holds no DICOM series that SimpleITK can read.")
    files = {sid: reader.GetGDCMSeriesFileNames(str(folder), sid) for sid in series}
    chosen = max(series, key=lambda sid: len(files[sid]))
    if member is not None:
        chosen = next((sid for sid in series if any(Path(f).samefile(member) for f in files[sid])), chosen)
    elif len(series) > 1:
        others = ", ".join(f"{sid} ({len(files[sid])} files)" for sid in series if sid != chosen)
        warnings.warn(
            f"{folder} holds {len(series)} DICOM series; reading the largest, {chosen} "
            f"({len(files[chosen])} files). Others: {others}.",
            UserWarning,
            stacklevel=3,
        )
    reader.SetFileNames(files[chosen])
    return reader.Execute()


def _check_complete(path: Path, image: sitk.Image) -> None:
    """ITK reads a truncated NIfTI without complaint, zero-filling what is missing: check it here."""
    name = path.name.lower()
    if name.endswith(".gz"):
        try:
            with gzip.open(path, "rb") as f:
                while f.read(1 << 22):
                    pass
        except (EOFError, OSError, zlib.error) as exc:
            raise InputError(f"Cannot read {path}: the file is unreadable or truncated ({exc}).") from None
    elif name.endswith(".nii"):
        with open(path, "rb") as f:
            header = f.read(112)
        # NIfTI-1 only (sizeof_hdr 348, either byte order); NIfTI-2 keeps its offset elsewhere
        for order in "<>":
            if len(header) == 112 and struct.unpack(order + "i", header[:4])[0] == 348:
                offset = struct.unpack(order + "f", header[108:112])[0]
                break
        else:
            return
        if 0 <= offset < 1e9:
            pixel_bytes = image.GetSizeOfPixelComponent() * image.GetNumberOfComponentsPerPixel()
            if path.stat().st_size < int(offset) + image.GetNumberOfPixels() * pixel_bytes:
                raise InputError(f"Cannot read {path}: the file is unreadable or truncated (shorter than its header says).")


def read_image(path: str | os.PathLike, channel: int | None = None) -> sitk.Image:
    """Read a 3D scalar volume from a file or a DICOM folder.

    Args:
        path: a NIfTI/NRRD/MHA/MHD file, a folder holding a DICOM series (several series:
            the largest is read and the others named in a warning), or one .dcm file of a series.
        channel: for a multichannel or 4D image, the channel (or last-axis index) to keep.

    Raises:
        InputError: missing, unreadable, truncated, 2D, or multichannel without ``channel``.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path} does not exist.")
    try:
        if path.is_dir():
            image = _read_dicom_folder(path)
        elif path.suffix.lower() == ".dcm":  # one file of a series: read the whole series
            image = _read_dicom_folder(path.parent, member=path)
        else:
            image = sitk.ReadImage(str(path))
    except InputError:
        raise
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()
        detail = next((line for line in first if "ERROR" in line or "rror" in line), first[-1] if first else "")
        raise InputError(f"Cannot read {path}: the file is unreadable or truncated ({detail.strip()[:200]}).") from None
    if path.is_file():
        _check_complete(path, image)
    return _to_scalar_3d(image, path, channel)


def _to_scalar_3d(image: sitk.Image, path: Path, channel: int | None) -> sitk.Image:
    n = image.GetNumberOfComponentsPerPixel()
    if n > 1:
        if channel is None:
            raise InputError(
                f"{path} has {n} channels per voxel; choose one (command line: --channel C, 0..{n - 1})."
            )
        if not 0 <= channel < n:
            raise InputError(f"Channel {channel} does not exist in {path}: it has channels 0..{n - 1}.")
        image = sitk.VectorIndexSelectionCast(image, channel)
    dim = image.GetDimension()
    if dim == 4:
        t = image.GetSize()[3]
        if channel is None:
            raise InputError(f"{path} is 4D with {t} volumes; choose one (command line: --channel C, 0..{t - 1}).")
        if not 0 <= channel < t:
            raise InputError(f"Volume {channel} does not exist in {path}: it has volumes 0..{t - 1}.")
        size = list(image.GetSize())
        size[3] = 0
        image = sitk.Extract(image, size, [0, 0, 0, channel])
        dim = 3
    if dim == 2 or (dim == 3 and min(image.GetSize()) == 1):
        raise InputError(
            f"{path} is a single 2D slice ({'x'.join(map(str, image.GetSize()))}); "
            "napari-sslseg segments 3D volumes with several slices."
        )
    if dim != 3:
        raise InputError(f"{path} has {dim} dimensions; napari-sslseg reads 3D volumes.")
    return image


def read_volume(path: str | os.PathLike, channel: int | None = None) -> tuple[np.ndarray, Geometry]:
    """Read a volume as a (z, y, x) array and its geometry. The file is never written to."""
    image = read_image(path, channel)
    return sitk.GetArrayFromImage(image), Geometry.of(image)


def to_image(array: np.ndarray, geometry: Geometry) -> sitk.Image:
    """Wrap a (z, y, x) array on ``geometry``'s grid."""
    if tuple(array.shape) != geometry.shape:
        raise InputError(f"Array of shape {array.shape} does not fit the grid {geometry.shape} (z, y, x).")
    if array.dtype == np.bool_:
        array = array.astype(np.uint8)
    image = sitk.GetImageFromArray(np.ascontiguousarray(array))
    image.SetSpacing(geometry.spacing)
    image.SetOrigin(geometry.origin)
    image.SetDirection(geometry.direction)
    return image


def check_writable(folder: str | os.PathLike) -> Path:
    """Create ``folder`` if needed and make sure files can be written there."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / ".napari-sslseg-write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise InputError(f"Cannot write to the output folder {folder}: {exc.strerror or exc}.") from None
    return folder


def write_volume(array: np.ndarray, geometry: Geometry, path: str | os.PathLike, compress: bool = True) -> Path:
    """Write a (z, y, x) array on ``geometry``'s grid; the suffix picks the format."""
    path = Path(path)
    if not str(path).lower().endswith(VOLUME_SUFFIXES):
        raise InputError(f"Cannot write {path}: use one of {', '.join(VOLUME_SUFFIXES)}.")
    try:
        sitk.WriteImage(to_image(array, geometry), str(path), compress)
    except RuntimeError as exc:
        raise InputError(f"Cannot write {path}: {str(exc).strip().splitlines()[-1][:200]}") from None
    return path
