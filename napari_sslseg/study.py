"""Predict a whole study: every scan of a folder or manifest, each into its own subfolder.

    for result in predict_study("run/model.pt", scans_of("study/"), "predictions/"):
        ...

Each scan's labels, confidence and uncertainty are written into ``OUT/<scan name>/``, then a
``done.json`` marker, atomically and last: a scan with its marker is complete, and a rerun skips it
(as long as the model is the same file). A scan that fails (unreadable, wrong grid ...) is recorded
with its reason and the study goes on; ``OUT/summary.csv`` lists every scan's status at the end.
With ``workers`` > 1 several scans are predicted at once, each in its own process.
"""

from __future__ import annotations

import csv
import io as _io
import json
import os
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Generator, Sequence

from . import atomic
from .cohort import Scan
from .config import PredictConfig

#: The marker written last into a scan's folder, once its outputs are complete.
DONE = "done.json"
#: One line per scan: name, image, status, reason, seconds.
SUMMARY = "summary.csv"
OUTPUTS = ("labels.nii.gz", "confidence.nii.gz", "uncertainty.nii.gz")


@dataclass
class ScanResult:
    """What became of one scan (an event: the caller shows progress from these)."""

    name: str  # the scan's name, its output subfolder
    image: str  # the input volume
    status: str  # "predicted", "done before" (skipped: its outputs were complete) or "failed"
    reason: str = ""  # why it failed, in one line
    seconds: float = 0.0  # time spent on it


@dataclass(frozen=True)
class StudySettings:
    """How each scan is predicted (the ``predict`` command's options)."""

    predict: PredictConfig  # MC passes, batch, scope, small-piece removal
    device: str = "cpu"  # torch device of each worker
    window: tuple[float, float] | None = None  # the fixed intensity window used in training, if any
    channel: int | None = None  # the channel of multichannel images
    threads: int = 0  # torch CPU threads per worker; 0 = torch's default


def model_identity(model_path: str | os.PathLike) -> dict:
    """What tells one model file from another for the done markers: path, size and modification time."""
    from .checkpoint import resolve

    p = resolve(model_path).resolve()
    st = p.stat()
    return {"model": str(p), "model_size": st.st_size, "model_mtime_ns": st.st_mtime_ns}


def is_done(folder: Path, identity: dict) -> bool:
    """The scan's outputs are complete and came from this model."""
    try:
        marker = json.loads((folder / DONE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return all(marker.get(k) == v for k, v in identity.items()) and all((folder / f).exists() for f in OUTPUTS)


def _failure(exc: BaseException) -> str:
    """One line: an InputError's own words, else the exception's type and first line."""
    from .errors import InputError

    text = (str(exc).strip().splitlines() or [""])[0][:300]
    return text if isinstance(exc, InputError) else f"{type(exc).__name__}: {text}"


_MODEL: dict = {}  # per process: the loaded model, by path


def _model(model_path: str, device: str):
    from .devices import pick_device
    from .checkpoint import load_model

    key = (model_path, device)
    if key not in _MODEL:
        _MODEL.clear()
        model = load_model(model_path, "cpu")
        model.to(pick_device(device))
        _MODEL[key] = model
    return _MODEL[key]


def predict_scan(model_path: str, scan: Scan, folder: Path, settings: StudySettings, identity: dict) -> ScanResult:
    """Predict one scan into ``folder``; any failure is returned, not raised."""
    t0 = time.perf_counter()
    try:
        from .data import Volume
        from .inference import predict_annotated_volume
        from .io import read_volume, write_volumes

        model = _model(model_path, settings.device)
        device = next(model.student.parameters()).device
        image, geom = read_volume(scan.image, settings.channel)
        labels = None
        if scan.labels is not None:
            labels, lgeom = read_volume(scan.labels)
            differences = lgeom.differences(geom)
            if differences:
                from .errors import InputError

                raise InputError(f"The labels are not on the image's grid ({'; '.join(differences)}).")
        axis = scan.axis if scan.axis is not None else model.axis
        volume = Volume(image, geom.spacing_zyx, labels=labels, annotated=list(scan.slices) if scan.slices else None,
                        axis=axis, name=scan.name, window=settings.window)
        pred = predict_annotated_volume(model, volume, device=device, **asdict(settings.predict))
        write_volumes([(pred.labels, geom, folder / OUTPUTS[0]), (pred.confidence, geom, folder / OUTPUTS[1]),
                       (pred.uncertainty, geom, folder / OUTPUTS[2])])
        seconds = time.perf_counter() - t0
        marker = json.dumps({**identity, "image": str(scan.image), "seconds": round(seconds, 2),
                             "uncertainty": pred.uncertainty_kind, "suggestions": pred.suggestions[:10]}, indent=2)
        atomic.replace([(folder / DONE, lambda tmp: tmp.write_text(marker, encoding="utf-8"), lambda tmp: json.loads(tmp.read_text(encoding="utf-8")))])
        return ScanResult(scan.name, str(scan.image), "predicted", seconds=seconds)
    except Exception as exc:  # noqa: BLE001 - one bad scan must not stop the study
        return ScanResult(scan.name, str(scan.image), "failed", _failure(exc), time.perf_counter() - t0)


def _start_worker(threads: int) -> None:
    import torch

    torch.set_num_threads(max(1, threads))


def predict_study(
    model_path: str | os.PathLike,
    scans: Sequence[Scan],
    out: str | os.PathLike,
    settings: StudySettings | None = None,
    workers: int = 1,
    rank: int = 0,
    world_size: int = 1,
) -> Generator[ScanResult, None, list[ScanResult]]:
    """Predict every scan not done yet into ``out/<name>/``; yields each scan's result as it comes,
    writes ``out/summary.csv`` (this process's share of the scans) and returns the results.

    Args:
        model_path: a train output folder or its model file.
        scans: the study (:func:`napari_sslseg.cohort.scans_of`).
        out: the output folder.
        settings: how each scan is predicted.
        workers: scans predicted at once, each in its own process (CPU; torch threads are shared out).
        rank, world_size: this process's share of the scans, every ``world_size``-th from ``rank``
            (under torchrun each rank predicts its own); its summary is ``summary.rankR.csv`` then.
    """
    settings = settings or StudySettings(PredictConfig())
    out = Path(out)
    identity = model_identity(model_path)
    _model(str(model_path), settings.device)  # a file that is no model is refused here, not once a scan
    mine = list(scans)[rank::world_size]
    results: list[ScanResult] = []
    todo = []
    for scan in mine:
        if is_done(out / scan.name, identity):
            result = ScanResult(scan.name, str(scan.image), "done before")
            results.append(result)
            yield result
        else:
            todo.append(scan)
    if workers <= 1 or len(todo) <= 1:
        if settings.threads > 0:
            _start_worker(settings.threads)
        for scan in todo:
            result = predict_scan(str(model_path), scan, out / scan.name, settings, identity)
            results.append(result)
            yield result
    else:
        import multiprocessing

        workers = min(workers, len(todo))
        threads = settings.threads or max(1, (os.cpu_count() or 1) // workers)
        # spawned, not forked: a fork of a process that has run torch may hang in its thread pools
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                                 initializer=_start_worker, initargs=(threads,)) as pool:
            futures = {pool.submit(predict_scan, str(model_path), scan, out / scan.name, settings, identity): scan
                       for scan in todo}
            for future in as_completed(futures):
                try:
                    result = future.result()
                except Exception as exc:  # noqa: BLE001 - the worker died (killed for memory, say)
                    scan = futures[future]
                    result = ScanResult(scan.name, str(scan.image), "failed", f"the worker process failed: {_failure(exc)}")
                results.append(result)
                yield result
    order = {s.name: i for i, s in enumerate(mine)}
    results.sort(key=lambda r: order[r.name])
    write_summary(results, out / (SUMMARY if world_size == 1 else f"summary.rank{rank}.csv"))
    return results


def write_summary(results: Sequence[ScanResult], path: Path) -> Path:
    """One CSV line per scan: name, image, status, reason, seconds; written atomically."""
    buffer = _io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["name", "image", "status", "reason", "seconds"])
    for r in results:
        writer.writerow([r.name, r.image, r.status, r.reason, f"{r.seconds:.1f}"])
    text = buffer.getvalue()
    atomic.replace([(path, lambda tmp: tmp.write_text(text, encoding="utf-8"), lambda tmp: tmp.read_text(encoding="utf-8"))])
    return path
