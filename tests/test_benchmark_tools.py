"""The repository's benchmark tool (benchmarks/tools): its data sets, budgets and targets, and that
the plugin never imports it."""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest

from benchmarks.tools.bench import Probes, build_parser, config_from, main
from benchmarks.tools.config import ProbeConfig
from napari_sslseg.bench.datasets import labelled_extent

PACKAGE = Path(__file__).resolve().parents[1] / "napari_sslseg"


def cfg_of(argv):
    return config_from(build_parser().parse_args(argv))


@pytest.mark.parametrize("argv,steps", [
    (["--dataset", "colin27"], 120), (["--dataset", "mni152"], 100), (["--dataset", "mni152", "--steps", "40"], 40),
    (["--dataset", "mni152", "--quick"], 20), (["a.nii", "b.nii"], 120),
])
def test_steps_per_training_defaults(argv, steps):
    assert cfg_of(argv).steps == steps


@pytest.mark.parametrize("argv,ks,time_ks", [
    (["--dataset", "colin27"], [2, 4, 8], [4, 8]),
    (["--dataset", "colin27", "--quick"], [2, 4], [4]),
    (["--dataset", "brain1"], [2, 3], [2, 3]),
    (["--dataset", "brain1", "--quick"], [2, 3], [2]),
    (["--dataset", "breast1"], [1, 2], [1, 2]),
    (["--dataset", "brain1", "--ks", "2", "--time-ks", "3"], [2], [3]),
])
def test_presets_set_their_own_ks(argv, ks, time_ks):
    cfg = cfg_of(argv)
    assert (cfg.ks, cfg.time_ks) == (ks, time_ks)


def test_quick_shrinks_the_probes_too_and_no_speed_leaves_them_out():
    d, q = cfg_of(["--dataset", "colin27"]), cfg_of(["--dataset", "colin27", "--quick"])
    assert isinstance(q, ProbeConfig) and q.times == [15, 30, 60] and q.score_stride == 3
    assert (d.speed_steps, q.speed_steps) == (30, 8) and q.inference_all_slices == 0 and q.memory_steps == 2
    assert Probes(d).jobs == len(d.methods) + 4
    off = cfg_of(["--dataset", "colin27", "--no-speed"])
    assert not off.speed and Probes(off).jobs == 0


def test_a_new_method_joins_the_bench_and_the_targets_by_registering(monkeypatch):
    """A method is one file: registered, it is a row of the default bench and a candidate of the targets."""
    from benchmarks.tools.targets import semi_supervised
    from napari_sslseg.bench.config import BenchConfig
    from napari_sslseg.methods import METHODS, Method

    class Newcomer(Method):
        name = "newcomer"

    monkeypatch.setitem(METHODS, "newcomer", Newcomer)
    assert "newcomer" in BenchConfig().methods and BenchConfig().methods[:2] == ["annotated_only", "supervised"]
    assert "newcomer" in semi_supervised() and "supervised" not in semi_supervised()


def test_a_run_needs_a_data_set_or_image_and_labels(capsys):
    assert main(["--out", "unused"]) == 2
    assert "--dataset" in capsys.readouterr().err


@pytest.mark.parametrize("name,classes", [("brain1", ["background", "tumour"]), ("breast1", ["background", "lesion"])])
def test_radiomics_presets_load(name, classes):
    from benchmarks.tools.presets import load_preset, shared_data_dir

    if shared_data_dir() is None or not (shared_data_dir() / "radiomics").is_dir():
        pytest.skip("../shared/data/radiomics is not here")
    ds = load_preset(name)
    assert ds.class_names == classes and ds.labels.dtype == np.uint8 and set(np.unique(ds.labels)) == {0, 1}
    if name == "brain1":
        assert ds.labels.shape == (25, 256, 256) and labelled_extent(ds.labels, 0) == (11, 17)


def test_the_plugin_never_imports_the_tool():
    importers = []
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else [])
            if any(n.split(".")[0] == "benchmarks" for n in names):
                importers.append(str(path.relative_to(PACKAGE)))
    assert importers == []


@pytest.mark.slow
def test_a_quick_run_on_the_sample_reports_the_targets(tmp_path):
    data = Path(__file__).resolve().parent / "data"
    argv = [str(data / "colin27_crop_t1.nii.gz"), str(data / "colin27_crop_labels.nii.gz"), "--quick", "--methods",
            "supervised", "--ks", "2", "--steps", "2", "--threads", "1", "--no-time", "--no-baselines", "--crop",
            "--no-speed", "--out", str(tmp_path)]
    assert main(argv) == 0
    md = (tmp_path / "results.md").read_text(encoding="utf-8")
    assert "- command: `python -m benchmarks.tools.bench " in md and "| supervised |" in md
    assert "### Targets" in md and "### Speed and memory" not in md


def test_step_rates_time_every_row_of_the_default_bench_the_variants_included():
    from benchmarks.tools.config import ProbeConfig
    from benchmarks.tools.speed import step_rates
    from napari_sslseg.bench.datasets import Dataset

    z, y, x = np.mgrid[0:12, 0:48, 0:48]
    labels = (((y - 24) ** 2 + (x - 24) ** 2) < 64).astype(np.uint8)
    ds = Dataset("disc", (labels * 100).astype(np.float32), labels, (1.0, 1.0, 1.0), ["background", "disc"], "synthetic")
    rows = ProbeConfig().methods[:2]
    assert rows == ["annotated_only", "supervised"]
    rates = step_rates(ds, ProbeConfig(methods=rows, speed_steps=2, overlay_k=2, threads=1), axis=0)
    assert [r.method for r in rates] == rows and all(r.steps_per_second > 0 for r in rates)
