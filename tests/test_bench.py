"""The benchmark's protocol pieces; timings are never asserted."""

import argparse
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from napari_sslseg.bench import add_arguments, run
from napari_sslseg.bench.datasets import apply_label_map, crop_to_labels, parse_label_map, Dataset
from napari_sslseg.bench.guidance import next_slice, simulate
from napari_sslseg.bench.protocol import evaluation_slices, evenly_spaced, labelled_extent, score

SAMPLES = Path(__file__).resolve().parents[1] / "napari_sslseg" / "samples"


@pytest.mark.parametrize("extent,k", [((10, 50), 2), ((10, 50), 4), ((10, 50), 8), ((3, 9), 7), ((0, 0), 1)])
def test_evenly_spaced_inside_distinct_sorted(extent, k):
    picks = evenly_spaced(extent, k)
    assert len(picks) == k
    assert picks == sorted(set(picks))
    assert all(extent[0] <= s <= extent[1] for s in picks)


def test_evenly_spaced_keeps_off_the_ends_and_spreads():
    assert evenly_spaced((0, 99), 2) == [25, 75]
    gaps = np.diff(evenly_spaced((0, 99), 4))
    assert gaps.min() >= 24


def test_too_many_slices_refused():
    with pytest.raises(Exception):
        evenly_spaced((5, 7), 4)


def test_extent_and_evaluation_slices():
    labels = np.zeros((10, 4, 4), np.uint8)
    labels[3, 1, 1] = 1
    labels[7, 2, 2] = 2
    assert labelled_extent(labels, 0) == (3, 7)
    assert evaluation_slices((3, 7), [4, 6]) == [3, 5, 7]
    assert evaluation_slices((3, 9), [4, 6], stride=2) == [3, 7, 9]  # --quick scores one in n


def test_hausdorff_of_strided_slices_counts_the_gap():
    """Every other slice scored: the stacked slices are two spacings apart along the axis."""
    truth = np.zeros((4, 6, 6), np.uint8)
    truth[1, 2:4, 2:4] = 1
    pred = np.zeros_like(truth)
    pred[3, 2:4, 2:4] = 1  # the same square, on the next scored slice
    names = ["bg", "a"]
    assert score(pred, truth, names, (1.5, 1.0, 1.0), 0, [1, 3]).hd95["a"] == pytest.approx(1.5)
    assert score(pred, truth, names, (1.5, 1.0, 1.0), 0, [1, 3], stride=2).hd95["a"] == pytest.approx(3.0)


def test_dice_matches_hand_computation():
    truth = np.zeros((2, 4, 4), np.uint8)
    pred = np.zeros_like(truth)
    truth[0, :2, :2] = 1  # 4 voxels
    pred[0, :2, :1] = 1  # 2 voxels, both inside: Dice = 2*2 / (4+2)
    truth[1, 2:, 2:] = 2  # 4 voxels
    pred[1, 3:, 2:] = 2  # 2 inside
    pred[1, 0, 0] = 2  # 1 outside: Dice = 2*2 / (4+3)
    s = score(pred, truth, ["bg", "a", "b", "c"], (1.0, 1.0, 1.0), 0, [0, 1])
    assert s.dice["a"] == pytest.approx(4 / 6)
    assert s.dice["b"] == pytest.approx(4 / 7)
    assert np.isnan(s.dice["c"])  # absent from the truth: not scored
    assert s.mean_dice == pytest.approx((4 / 6 + 4 / 7) / 2)
    assert s.hd95["a"] == pytest.approx(1.0)  # the missing column is one voxel away


def test_score_only_on_given_slices_and_missing_class_is_inf():
    truth = np.ones((3, 4, 4), np.uint8)
    pred = np.ones_like(truth)
    pred[2] = 0  # wrong only on slice 2
    assert score(pred, truth, ["bg", "a"], (2.0, 1.0, 1.0), 0, [0, 1]).dice["a"] == pytest.approx(1.0)
    miss = score(pred, truth, ["bg", "a"], (2.0, 1.0, 1.0), 0, [2])
    assert miss.dice["a"] == 0.0 and miss.hd95["a"] == float("inf")


def test_label_map():
    m = parse_label_map("71:1,72:1,37:5")
    out = apply_label_map(np.array([0, 71, 72, 37, 99], np.uint8), m)
    assert out.tolist() == [0, 1, 1, 5, 0]


def test_crop_keeps_every_label():
    labels = np.zeros((20, 20, 20), np.uint8)
    labels[5:8, 9, 10:12] = 3
    ds = Dataset("t", np.random.rand(20, 20, 20), labels, (1, 1, 1), ["bg", "a", "b", "c"], "test")
    c = crop_to_labels(ds, 2)
    assert c.labels.shape == (7, 5, 6)
    assert np.count_nonzero(c.labels) == np.count_nonzero(labels)


class StubPrediction:
    """Suggests annotated and out-of-extent slices first, to check they are skipped."""

    def __init__(self, annotated, n=40):
        self.suggestions = list(annotated) + [0, 39] + [s for s in range(n) if s not in annotated]
        self.slice_scores = np.arange(n, dtype=float)


def test_guidance_only_adds_unannotated_slices_inside_the_extent():
    extent = (5, 30)
    seen, asked = [], []

    def train_eval(annotated, suggest):
        seen.append(list(annotated))
        asked.append(suggest)
        return len(annotated) / 10, StubPrediction(annotated) if suggest else None

    curves = simulate(extent, 2, 5, 6, train_eval, seed=0)
    assert set(curves) == {"suggested", "uniform", "random"}
    for c in curves.values():
        for before, after in zip(c.chosen, c.chosen[1:]):
            if c.strategy != "uniform":
                added = set(after) - set(before)
                assert len(added) == 1 and set(before) < set(after)
                assert all(extent[0] <= s <= extent[1] for s in added)
        assert [n for n, _ in c.points] == list(range(2, (6 if c.strategy == "uniform" else 5) + 1))
    assert curves["suggested"].picks[0] == 5  # 0 is outside, the start slices are annotated
    assert curves["uniform"].slices_to_reach(0.6) == 6
    for a in seen:
        assert len(a) == len(set(a))
    # suggestions (a whole-volume MC prediction) are asked for only where a suggested slice is taken:
    # the first model's and the suggested chain's before its last round
    assert sum(asked) == 1 + (5 - 2 - 1)


def test_next_slice_random_never_repeats():
    rng = np.random.default_rng(0)
    annotated = [1, 2, 3]
    for _ in range(3):
        annotated.append(next_slice("random", annotated, (1, 6), None, rng))
    assert sorted(annotated) == [1, 2, 3, 4, 5, 6]


def test_quick_smoke_run_on_the_sample(tmp_path):
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args([
        str(SAMPLES / "colin27_deep_t1.nii.gz"), str(SAMPLES / "colin27_deep_labels.nii.gz"),
        "--quick", "--methods", "supervised", "--ks", "2", "--steps", "3", "--threads", "1",
        "--no-guidance", "--no-speed", "--out", str(tmp_path),
    ])
    assert run(args) == 0
    md = (tmp_path / "results.md").read_text()
    assert "| supervised |" in md and "full supervision" in md
    assert (tmp_path / "curves.png").stat().st_size > 0
    rows = (tmp_path / "results.csv").read_text().splitlines()
    assert rows[0].startswith("dataset,method,k,seed,class,dice,hd95_mm")
    assert any(",supervised,2,0,mean," in r for r in rows)


@pytest.mark.parametrize("workers", [1, 2])
def test_accuracy_jobs_in_process_and_in_workers(workers):
    """Every (method, k, seed) and the ceiling are scored once; the guidance chains come back whole."""
    from napari_sslseg.bench.config import BenchConfig
    from napari_sslseg.bench.datasets import crop_to_labels, load_pair
    from napari_sslseg.bench.runner import CEILING, run_accuracy, trainings_planned

    ds = crop_to_labels(load_pair(SAMPLES / "colin27_deep_t1.nii.gz", SAMPLES / "colin27_deep_labels.nii.gz"), 2)
    cfg = BenchConfig(methods=["supervised"], ks=[2, 3], seeds=[0, 1], steps=2, workers=workers, threads=1,
                      guidance_start=2, guidance_max=3, guidance_budget=3, guidance_mc_passes=2, speed=False)
    ticks = []
    res = run_accuracy(ds, cfg, tick=ticks.append)
    assert sum(ticks) == trainings_planned(cfg)
    keys = [(r.method, r.k, r.seed) for r in res.runs]
    assert len(keys) == len(set(keys))
    assert set(keys) == {(m, k, s) for m in cfg.methods + [CEILING] for k in cfg.ks for s in cfg.seeds}
    assert list(res.curves) == ["suggested", "uniform", "random"]
    for name in ("suggested", "uniform", "random"):
        curve = res.curves[name]
        assert [n for n, _ in curve.points] == [2, 3]
        assert len(curve.chosen[1]) == 3 and set(curve.chosen[1]) <= set(range(res.extent[0], res.extent[1] + 1))
    assert res.workers == workers


@pytest.mark.parametrize("argv,steps", [
    (["--dataset", "colin27"], 120), (["--dataset", "mni152"], 100), (["--dataset", "mni152", "--steps", "40"], 40),
    (["--dataset", "mni152", "--quick"], 20), (["a.nii", "b.nii"], 120),
])
def test_steps_per_training_defaults(argv, steps):
    from napari_sslseg.bench import config_from_args

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    assert config_from_args(parser.parse_args(argv)).steps == steps
