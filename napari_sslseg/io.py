"""Volumes in and out with SimpleITK: NIfTI, NRRD, MHA/MHD and DICOM series.

Arrays come out in SimpleITK's (z, y, x) order. The geometry (spacing, origin,
direction) travels beside the array so that anything written back lands on the
source image's exact grid.
"""

from __future__ import annotations

import errno
import gzip
import os
import re
import struct
import tempfile
import warnings
import zlib
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from . import atomic
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

    def differences(self, other: "Geometry", tol: float = 1e-3) -> list[str]:
        """What differs between the two grids, each as "name (this) vs (other)"; empty when they match."""
        out = []
        if self.size != other.size:
            out.append(f"size {'x'.join(map(str, self.size))} vs {'x'.join(map(str, other.size))} voxels")
        for name, atol, unit in (("spacing", tol, " mm"), ("origin", tol * 10, " mm"), ("direction", tol, "")):
            a, b = getattr(self, name), getattr(other, name)
            if not np.allclose(a, b, rtol=0 if name == "direction" else tol, atol=atol):
                out.append(f"{name} {_numbers(a)} vs {_numbers(b)}{unit}")
        return out

    def same_grid(self, other: "Geometry", tol: float = 1e-3) -> bool:
        return not self.differences(other, tol)

    def describe(self) -> str:
        sp = "x".join(f"{s:g}" for s in self.spacing)
        return f"{'x'.join(map(str, self.size))} voxels at {sp} mm"

    def to_dict(self) -> dict:
        return {k: list(getattr(self, k)) for k in ("size", "spacing", "origin", "direction")}

    @classmethod
    def from_dict(cls, d: dict) -> "Geometry":
        return cls(*(tuple(d[k]) for k in ("size", "spacing", "origin", "direction")))


class _Messages(sitk.LoggerBase):
    """Collects what ITK would print to stderr."""

    def __init__(self):
        super().__init__()
        self.warnings: list[str] = []

    def DisplayWarningText(self, text):
        self.warnings.append(text)

    def DisplayText(self, text):
        self.warnings.append(text)

    def DisplayErrorText(self, text):  # errors also raise, and the exception carries them
        pass

    def DisplayGenericOutputText(self, text):
        self.warnings.append(text)

    def DisplayDebugText(self, text):
        pass


@contextmanager
def itk_messages(path: str | os.PathLike):
    """Turn what ITK prints to stderr while reading or writing ``path`` into one-line Python warnings."""
    logger = _Messages()
    previous = logger.SetAsGlobalITKLogger()
    try:
        yield
    finally:
        previous.SetAsGlobalITKLogger()
    for text in dict.fromkeys(logger.warnings):
        lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
        line = lines[-1] if lines else text.strip()
        line = re.sub(r"^\w+ \(0x[0-9a-f]+\): ", "", line)  # "ImageSeriesReader (0x55...): "
        warnings.warn(f"{path}: ITK says: {' '.join(line.split())}", UserWarning, stacklevel=3)


def _numbers(values) -> str:
    return "(" + ", ".join(f"{v:.4g}" for v in values) + ")"


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
    reader.MetaDataDictionaryArrayUpdateOn()
    image = reader.Execute()
    _check_slice_positions(reader, len(files[chosen]), folder)
    return image


def _check_slice_positions(reader: sitk.ImageSeriesReader, count: int, folder: Path) -> None:
    """Refuse a series whose slices are not evenly spaced: ITK would stretch it over the gap."""
    try:
        positions = [[float(v) for v in reader.GetMetaData(i, "0020|0032").split("\\")] for i in range(count)]
        cosines = [float(v) for v in reader.GetMetaData(0, "0020|0037").split("\\")]
    except (RuntimeError, ValueError):
        return  # no positions to judge by
    if count < 3 or len(cosines) != 6 or any(len(p) != 3 for p in positions):
        return
    normal = np.cross(cosines[:3], cosines[3:])
    gaps = np.diff(np.asarray(positions) @ normal)
    usual = float(np.median(np.abs(gaps)))
    odd = np.flatnonzero(np.abs(np.abs(gaps) - usual) > max(0.01 * usual, 1e-3))
    if odd.size:
        k = int(odd[0])
        raise InputError(
            f"The DICOM series in {folder} is not evenly spaced: slices {k} and {k + 1} are "
            f"{abs(gaps[k]):g} mm apart, the others {usual:g} mm"
            + (": a slice is missing." if abs(gaps[k]) > usual else ".")
            + " Read the complete series, or resample it onto an even grid first."
        )


#: NIfTI datatype codes -> numpy types of the payload; floats are checked for NaN/Inf.
_NIFTI_FLOATS = {16: "f4", 64: "f8", 32: "c8", 1792: "c16"}
#: deflate cannot shrink data by more than about this factor: a .gz holding more is not genuine.
_MAX_GZIP_RATIO = 1100


def _nifti_header(path: Path) -> dict | None:
    """The few fields of a single-file NIfTI-1 or NIfTI-2 header we check, or None if it is none."""
    opener = gzip.open if path.name.lower().endswith(".gz") else open
    try:
        with opener(path, "rb") as f:
            raw = f.read(540)
    except (EOFError, OSError, zlib.error):
        return None  # ITK's read reports it
    for order in "<>":
        if len(raw) >= 348 and struct.unpack(order + "i", raw[:4])[0] == 348 and raw[344:347] == b"n+1":
            dim = struct.unpack(order + "8h", raw[40:56])
            datatype, bitpix = struct.unpack(order + "2h", raw[70:74])
            offset = struct.unpack(order + "f", raw[108:112])[0]
        elif len(raw) >= 540 and struct.unpack(order + "i", raw[:4])[0] == 540 and raw[4:7] == b"n+2":
            datatype, bitpix = struct.unpack(order + "2h", raw[12:16])
            dim = struct.unpack(order + "8q", raw[16:80])
            offset = struct.unpack(order + "q", raw[168:176])[0]
        else:
            continue
        if not 1 <= dim[0] <= 7 or min(dim[1 : dim[0] + 1]) < 1 or bitpix < 1 or not 0 <= offset < 1 << 40:
            return None
        voxels = int(np.prod([int(d) for d in dim[1 : dim[0] + 1]], dtype=object))
        dtype = _NIFTI_FLOATS.get(datatype)
        return {"offset": int(offset), "bytes": voxels * bitpix // 8, "dtype": np.dtype(order + dtype) if dtype else None}
    return None


def _scan_nifti(path: Path) -> tuple[int, int, int] | None:
    """(payload bytes the header announces, payload bytes present, NaN/Inf voxels) of a NIfTI file.

    The payload is streamed once (decompressed for .nii.gz); only float payloads are looked at
    voxel by voxel, and an uncompressed file that is not float is judged by its size alone.
    """
    header = _nifti_header(path)
    if header is None:
        return None
    gz, dtype, offset = path.name.lower().endswith(".gz"), header["dtype"], header["offset"]
    need = offset + header["bytes"]
    if not gz and (dtype is None or path.stat().st_size < need):
        return header["bytes"], min(header["bytes"], max(0, path.stat().st_size - offset)), 0
    got, bad, chunk = 0, 0, 1 << 22  # a multiple of every voxel size
    try:
        with (gzip.open if gz else open)(path, "rb") as f:
            got = len(f.read(offset))
            while block := f.read(chunk):
                keep = block[: max(0, need - got)]
                got += len(block)
                if dtype is not None and keep:
                    values = np.frombuffer(keep[: len(keep) // dtype.itemsize * dtype.itemsize], dtype)
                    bad += int(np.count_nonzero(~np.isfinite(values)))
    except (EOFError, OSError, zlib.error) as exc:
        raise InputError(f"Cannot read {path}: the file is unreadable or truncated ({exc}).") from None
    return header["bytes"], max(0, min(got, need) - offset), bad


def _check_nifti_payload(path: Path, finite: bool = True) -> None:
    """ITK reads a NIfTI whose payload is cut short zero-filled, and turns NaN/Inf into 0: refuse both."""
    scan = _scan_nifti(path)
    if scan is None:
        return
    announced, present, bad = scan
    if present < announced:
        raise InputError(
            f"Cannot read {path}: the file is unreadable or truncated (its header announces "
            f"{announced} bytes of voxels, it holds {present})."
        )
    if bad and finite:
        raise InputError(f"{path} holds {bad} NaN or infinite voxels; fill or mask them first.")


def _check_complete(path: Path, finite: bool = True) -> None:
    """ITK reads a truncated file without complaint, zero-filling what is missing: check it here."""
    name = path.name.lower()
    if name.endswith((".nii", ".nii.gz")):
        _check_nifti_payload(path, finite)
    elif name.endswith(".gz"):
        try:
            with gzip.open(path, "rb") as f:
                while f.read(1 << 22):
                    pass
        except (EOFError, OSError, zlib.error) as exc:
            raise InputError(f"Cannot read {path}: the file is unreadable or truncated ({exc}).") from None


def available_memory() -> int | None:
    """Bytes of memory the system can still give, or None where it does not say."""
    try:
        import psutil

        return int(psutil.virtual_memory().available)
    except ImportError:
        pass
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def _check_size(path: Path) -> None:
    """Refuse, before anything is allocated, a header announcing more voxels than the file or memory can hold."""
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    reader.ReadImageInformation()
    size = reader.GetSize()
    pixel = sitk.Image([1] * 2, reader.GetPixelID(), reader.GetNumberOfComponents())
    need = int(np.prod(size, dtype=object)) * pixel.GetSizeOfPixelComponent() * pixel.GetNumberOfComponentsPerPixel()
    what = f"its header announces {'x'.join(map(str, size))} voxels ({_gb(need)})"
    name, have = path.name.lower(), path.stat().st_size
    if (name.endswith(".nii") and need > have) or (name.endswith(".gz") and need > _MAX_GZIP_RATIO * have):
        raise InputError(f"Cannot read {path}: {what}, more than a file of {_gb(have)} can hold; it is damaged or truncated.")
    free = available_memory()
    if free is not None and need > free:
        raise InputError(f"Cannot read {path}: {what}, more than the {_gb(free)} of memory available.")


def _gb(n: int) -> str:
    return f"{n / 1e9:.1f} GB" if n >= 1e8 else f"{n / 1e6:.1f} MB" if n >= 1e5 else f"{n} bytes"


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
        with itk_messages(path):
            if path.is_dir():
                image = _read_dicom_folder(path)
            elif path.suffix.lower() == ".dcm":  # one file of a series: read the whole series
                image = _read_dicom_folder(path.parent, member=path)
            else:
                _check_size(path)
                _check_complete(path)
                image = sitk.ReadImage(str(path))
    except InputError:
        raise
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()
        detail = next((line for line in first if "ERROR" in line or "rror" in line), first[-1] if first else "")
        raise InputError(f"Cannot read {path}: the file is unreadable or truncated ({detail.strip()[:200]}).") from None
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
    """Make sure files can be written in ``folder`` without creating it: the writes create it, so a
    run that fails before writing leaves no empty folder behind."""
    folder = Path(folder)
    existing = next(p for p in (folder, *folder.parents) if p.exists() or p == p.parent)
    try:
        if not existing.is_dir():
            raise NotADirectoryError(errno.ENOTDIR, "Not a directory", str(existing))
        fd, probe = tempfile.mkstemp(prefix=".napari-sslseg-write-test.", dir=existing)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise InputError(f"Cannot write to the output folder {folder}: {exc.strerror or exc}.") from None
    return folder


def _reads_back_as(image: sitk.Image) -> Callable[[Path], None]:
    """A check that the file at a path reads back complete, with ``image``'s grid and voxels."""

    def check(path: Path) -> None:
        reader = sitk.ImageFileReader()
        reader.SetFileName(str(path))
        reader.ReadImageInformation()
        if tuple(reader.GetSize()) != tuple(image.GetSize()):
            raise InputError(f"its header says {'x'.join(map(str, reader.GetSize()))} voxels")
        _check_complete(path, finite=False)
        back = reader.Execute()
        if not Geometry.of(back).same_grid(Geometry.of(image)):
            raise InputError(f"its grid is {Geometry.of(back).describe()}")
        written = sitk.GetArrayViewFromImage(image)
        if not np.array_equal(sitk.GetArrayViewFromImage(back), written, equal_nan=written.dtype.kind in "fc"):
            raise InputError("its voxels differ from those written")

    return check


def write_volumes(outputs: Sequence[tuple[np.ndarray, Geometry, str | os.PathLike]], compress: bool = True) -> list[Path]:
    """Write (z, y, x) arrays on their grids, all or none: each is written to a temporary beside its
    target and read back, and the old files are replaced only when every new one is complete. The
    suffix picks the format; the folder is created when needed."""
    staged = []
    for array, geometry, path in outputs:
        path = Path(path)
        if not str(path).lower().endswith(VOLUME_SUFFIXES):
            raise InputError(f"Cannot write {path}: use one of {', '.join(VOLUME_SUFFIXES)}.")
        image = to_image(array, geometry)

        def write(tmp: Path, image=image) -> None:
            with itk_messages(tmp.name):
                sitk.WriteImage(image, str(tmp), compress)

        staged.append((path, write, _reads_back_as(image)))
    return atomic.replace(staged)


def write_volume(array: np.ndarray, geometry: Geometry, path: str | os.PathLike, compress: bool = True) -> Path:
    """Write a (z, y, x) array on ``geometry``'s grid, completely or not at all; see :func:`write_volumes`."""
    return write_volumes([(array, geometry, path)], compress)[0]
