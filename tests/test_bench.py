"""The benchmark's protocol pieces; timings are never asserted."""

import argparse
from pathlib import Path

import numpy as np
import pytest

from napari_sslseg.bench import add_arguments, config_from_args, run
from napari_sslseg.bench.baselines import INSTALL_HINT, ItkJob, itk_interpolate, itk_missing, run_baselines
from napari_sslseg.data import keep_slices
from napari_sslseg.bench.config import BenchConfig
from napari_sslseg.config import DEFAULT_METHOD
from napari_sslseg.bench.datasets import apply_label_map, crop_to_labels, labelled_extent, load_pair, parse_label_map, Dataset
from napari_sslseg.bench.guidance import next_slice, simulate
from napari_sslseg.bench.protocol import evaluation_slices, evenly_spaced, score, scored_slices
from napari_sslseg.errors import InputError

DATA = Path(__file__).resolve().parent / "data"
SAMPLE_ARGS = [str(DATA / "colin27_crop_t1.nii.gz"), str(DATA / "colin27_crop_labels.nii.gz")]


def parse(argv):
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args(argv)


def sample_dataset():
    return load_pair(*SAMPLE_ARGS)


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
    with pytest.raises(InputError, match="Cannot pick 4 distinct slices"):
        evenly_spaced((5, 7), 4)


def test_extent_and_evaluation_slices():
    labels = np.zeros((10, 4, 4), np.uint8)
    labels[3, 1, 1] = 1
    labels[7, 2, 2] = 2
    assert labelled_extent(labels, 0) == (3, 7)
    assert evaluation_slices((3, 7), [4, 6]) == [3, 5, 7]
    assert evaluation_slices((3, 9), [4, 6], stride=2) == [3, 7, 9]  # --quick scores one in n


def test_scored_slices_are_every_unannotated_slice_of_the_volume():
    assert scored_slices(10, [4, 6]) == [0, 1, 2, 3, 5, 7, 8, 9]
    assert scored_slices(10, [4, 6], stride=3) == [0, 3, 8]


def test_a_false_positive_outside_the_labelled_extent_lowers_the_dice():
    """The structure lies on slices 3..6; a model that also paints it on slice 9 (where none exists)
    is perfect inside the extent, and penalised by the whole-volume protocol."""
    truth = np.zeros((10, 8, 8), np.uint8)
    truth[3:7, 2:6, 2:6] = 1
    pred = truth.copy()
    pred[9, 2:6, 2:6] = 1  # a false positive, far from every structure
    names = ["bg", "a"]
    annotated = [4]
    inside = score(pred, truth, names, (1.0, 1.0, 1.0), 0, evaluation_slices(labelled_extent(truth, 0), annotated))
    assert inside.mean_dice == pytest.approx(1.0)
    whole = score(pred, truth, names, (1.0, 1.0, 1.0), 0, scored_slices(10, annotated))
    assert whole.mean_dice == pytest.approx(2 * 48 / (48 + 64))  # 3 slices of 16 right, one of 16 painted wrongly
    assert whole.hd95["a"] > inside.hd95["a"]


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


@pytest.mark.slow
@pytest.mark.parametrize("extra", [[], ["--crop", "--no-baselines"]])
def test_quick_smoke_run_on_the_sample(tmp_path, extra):
    args = parse(SAMPLE_ARGS + [
        "--quick", "--methods", "supervised", "--ks", "2", "--steps", "3", "--threads", "1",
        "--times", "0.5,1", "--time-ks", "2", "--out", str(tmp_path),
    ] + extra)
    assert run(args) == 0
    md = (tmp_path / "results.md").read_text(encoding="utf-8")
    # --quick leaves the ceiling out: from scratch it needs thousands of steps
    assert "| supervised |" in md and "full supervision" not in md
    if extra:
        assert "cropped (`--crop`) to the labelled box + 8 voxels" in md and "(no training)" not in md
    else:
        assert "64x88x96, the whole volume (not cropped)" in md
        assert "| prior (no training) |" in md and "| itk_interpolation (no training) |" in md
        assert ("not installed" in md) == (itk_missing() is not None)
        if itk_missing() is None:
            assert "loading ITK's libraries took" in md
    assert "slices outside the labelled extent included" in md
    # one training of the table: run in this process, no worker started for it
    assert "1 training(s) at a time, 1 torch thread(s) each" in md
    assert "after T s of training, k=2" in md and "| 0.5 s | 1 s |" in md
    assert (tmp_path / "curves.png").stat().st_size > 0
    rows = (tmp_path / "results.csv").read_text(encoding="utf-8").splitlines()
    assert rows[0].startswith("dataset,method,k,seed,class,dice,hd95_mm")
    assert any(",supervised,2,0,mean," in r for r in rows)
    timed = (tmp_path / "time.csv").read_text(encoding="utf-8").splitlines()
    assert timed[0] == "dataset,method,k,seed,time_s,trained_s,step,class,dice,hd95_mm"
    assert sum(",supervised,2,0,0.5," in r and ",mean," in r for r in timed) == 1
    assert sum(",supervised,2,0,1.0," in r and ",mean," in r for r in timed) == 1


@pytest.mark.slow
@pytest.mark.parametrize("workers", [1, 2])
def test_accuracy_jobs_in_process_and_in_workers(workers):
    """Every (method, k, seed) and the ceiling are scored once; the guidance chains come back whole
    (run in worker processes only: in this process they go through the same jobs, at twice the cost)."""
    from napari_sslseg.bench.config import BenchConfig
    from napari_sslseg.bench.datasets import crop_to_labels, load_pair
    from napari_sslseg.bench.runner import CEILING, run_accuracy, trainings_planned

    ds = crop_to_labels(load_pair(DATA / "colin27_crop_t1.nii.gz", DATA / "colin27_crop_labels.nii.gz"), 2)
    cfg = BenchConfig(methods=["supervised"], ks=[2, 3], seeds=[0], steps=2, ceiling_steps=2, workers=workers, threads=1, guidance=workers > 1,
                      guidance_start=2, guidance_max=3, guidance_budget=3, guidance_mc_passes=2)
    ticks = []
    res = run_accuracy(ds, cfg, tick=ticks.append)
    assert sum(ticks) == trainings_planned(cfg)
    keys = [(r.method, r.k, r.seed) for r in res.runs]
    assert len(keys) == len(set(keys))
    assert set(keys) == {(m, k, s) for m in cfg.methods + [CEILING] for k in cfg.ks for s in cfg.seeds}
    assert list(res.curves) == (["suggested", "uniform", "random"] if cfg.guidance else [])
    for name in res.curves:
        curve = res.curves[name]
        assert [n for n, _ in curve.points] == [2, 3]
        assert len(curve.chosen[1]) == 3 and set(curve.chosen[1]) <= set(range(res.extent[0], res.extent[1] + 1))
    assert res.workers == workers


def test_each_benchmark_training_registers_its_prior_anew():
    """The benchmark times a user's first training: a registration kept from an earlier prior of the
    same image and slices (:func:`napari_sslseg.prior.propagate` keeps the last) is not taken."""
    from napari_sslseg.bench.protocol import trainer_for, training_volume

    ds = crop_to_labels(sample_dataset(), 2)
    annotated = evenly_spaced(labelled_extent(ds.labels, 0), 2)
    kept = training_volume(ds, annotated, 0).prior(int(ds.labels.max()) + 1)._flow
    assert training_volume(ds, annotated, 0).prior(int(ds.labels.max()) + 1)._flow is kept  # kept for reuse
    trainer = trainer_for(ds, annotated, 0, "supervised", threads=1, steps=1)
    assert trainer.priors[0]._flow is not kept


def test_whole_volume_by_default_crop_on_request():
    from napari_sslseg.bench.main import load

    plain = config_from_args(parse(SAMPLE_ARGS))
    assert plain.crop is False
    full, ds = load(parse(SAMPLE_ARGS), plain)
    assert ds is full
    cropped_cfg = config_from_args(parse(SAMPLE_ARGS + ["--crop"]))
    assert cropped_cfg.crop is True
    full, ds = load(parse(SAMPLE_ARGS + ["--crop"]), cropped_cfg)
    assert ds.labels.shape != full.labels.shape and np.count_nonzero(ds.labels) == np.count_nonzero(full.labels)


def test_quick_and_default_budgets():
    from napari_sslseg.methods import METHODS

    d = config_from_args(parse(SAMPLE_ARGS))
    assert d.times == [15, 30, 60, 120] and d.timed_methods() == d.methods and not d.guidance and d.steps == 120
    # the annotated-slices-only baseline, then every registered method, those without unannotated
    # slices (the baselines) first
    assert d.methods[0] == "annotated_only" and sorted(d.methods[1:]) == sorted(METHODS) and d.methods[1] == "supervised"
    q = config_from_args(parse(SAMPLE_ARGS + ["--quick"]))
    assert q.times == [15, 30, 60] and q.timed_methods() == ["supervised", DEFAULT_METHOD] and q.score_stride == 3
    assert q.steps == 20 and config_from_args(parse(SAMPLE_ARGS + ["--quick", "--steps", "40"])).steps == 40
    q = config_from_args(parse(["--quick", "--methods", f"ua_mt,{DEFAULT_METHOD}", "--times", "60,15"]))
    assert q.timed_methods() == [DEFAULT_METHOD] and q.times == [15, 60]
    assert config_from_args(parse(["--guidance"])).guidance
    assert config_from_args(parse(["--time-methods", "entropy_min"])).timed_methods() == ["entropy_min"]


def test_the_package_bench_takes_image_and_labels_only(tmp_path, capsys):
    """The repository's data sets and probes are not the plugin's: no --dataset, no --no-speed."""
    for option in (["--dataset", "colin27"], ["--no-speed"]):
        with pytest.raises(SystemExit):
            parse(SAMPLE_ARGS + option)
    assert run(parse(["--out", str(tmp_path)])) == 2
    assert "Give IMAGE LABELS" in capsys.readouterr().err


def test_times_must_be_positive_seconds(capsys):
    with pytest.raises(SystemExit):
        parse(["--times", "0,30"])
    assert "positive seconds" in capsys.readouterr().err


def test_too_many_slices_for_the_labels_stop_before_training(tmp_path, capsys):
    assert run(parse(SAMPLE_ARGS + ["--ks", "2", "--time-ks", "99", "--out", str(tmp_path)])) == 2
    assert "cannot annotate k=99" in capsys.readouterr().err


def cone(n=20, size=24, axis=0):
    """A cone along ``axis``: a disc whose radius shrinks from slice 3 to slice 16 (class 1), and a
    fixed square (class 2) on slices 5..14: shapes interpolation recovers well."""
    labels = np.zeros((n, size, size), np.uint8)
    yy, xx = np.mgrid[:size, :size]
    for z in range(3, 17):
        r = 10 - 0.5 * (z - 3)
        labels[z][(yy - 12) ** 2 + (xx - 12) ** 2 <= r * r] = 1
    labels[5:15, 2:6, 2:6] = 2
    return np.moveaxis(labels, 0, axis).copy()


def scorer_for(labels, axis, names=("bg", "a", "b")):
    def scorer(pred, annotated):
        return score(pred, labels, list(names), (2.0, 1.0, 1.0), axis, scored_slices(labels.shape[axis], annotated))
    return scorer


def test_prior_row_scores_the_propagated_labels():
    pytest.importorskip("napari_sslseg.prior")
    labels = cone()
    rows, info = run_baselines(labels, (2.0, 1.0, 1.0), 0, 3, {3: [5, 10, 14]}, scorer_for(labels, 0), names=("prior",))
    (row,) = rows
    assert row.name == "prior" and row.k == 3 and row.note == "" and row.seconds >= 0
    from napari_sslseg.prior import propagate

    direct, _, _ = propagate(keep_slices(labels, [5, 10, 14], 0), [5, 10, 14], 0, (2.0, 1.0, 1.0), num_classes=3).volume()
    assert row.scores == scorer_for(labels, 0)(direct, [5, 10, 14])  # its labels, scored as a model's
    assert row.scores.dice["a"] > 0.6 and np.isfinite(row.scores.mean_hd95)
    assert info == {}


def test_baseline_rows_say_not_installed_when_itk_is_missing(monkeypatch):
    import napari_sslseg.bench.baselines as baselines

    monkeypatch.setattr(baselines, "itk_missing", lambda: INSTALL_HINT)
    labels = cone()
    rows, info = run_baselines(labels, (2.0, 1.0, 1.0), 0, 3, {2: [6, 12], 3: [5, 10, 14]}, scorer_for(labels, 0),
                               names=("itk_interpolation",))
    assert [(r.k, r.scores, r.note) for r in rows] == [(2, None, INSTALL_HINT), (3, None, INSTALL_HINT)]
    assert "itk_load_seconds" not in info


@pytest.mark.slow
@pytest.mark.skipif(itk_missing() is not None, reason="itk-morphologicalcontourinterpolation is not installed")
def test_itk_interpolation_fills_between_the_annotated_slices():
    """Along either axis, with the slices detected or named: the annotated slices stay as painted and
    the shapes between them come back (nothing is painted across the slices: the axis is right)."""
    annotated = [5, 10, 14]
    cases = [(axis, slices) for axis in (0, 2) for slices in ("detected", "annotated")]
    jobs, truths = [], []
    for axis, slices in cases:
        labels = cone(axis=axis)
        truths.append(labels)
        jobs.append(ItkJob(keep_slices(labels, annotated, axis), annotated, axis, tuple(np.roll((2.0, 1.0, 1.0), axis)),
                           3, slices))
    outs, seconds, load_seconds = itk_interpolate(jobs)
    assert len(seconds) == len(cases) and min(seconds) >= 0 and load_seconds > 0
    for (axis, slices), labels, job, out in zip(cases, truths, jobs, outs):
        assert out.dtype == np.uint8 and out.shape == labels.shape
        assert np.array_equal(np.take(out, annotated, axis=axis), np.take(labels, annotated, axis=axis))
        between = [s for s in range(5, 15) if s not in annotated]
        s = score(out, labels, ["bg", "a", "b"], job.spacing, axis, between)
        assert s.dice["a"] > 0.8 and s.dice["b"] > 0.9, (axis, slices, s.dice)


def test_itk_interpolation_refuses_unknown_slice_positions():
    labels = cone()
    with pytest.raises(ValueError, match="must be one of detected, annotated"):
        run_baselines(labels, (2.0, 1.0, 1.0), 0, 3, {3: [5, 10, 14]}, scorer_for(labels, 0), itk_slices="guessed")


@pytest.mark.slow
def test_time_axis_stops_the_clock_while_scoring(monkeypatch):
    """A fake clock: every reading moves it 10 s and a scoring costs 1000 s, which the training
    time must not count; checkpoints fall at the first step past each time."""
    from napari_sslseg.bench.protocol import Scores
    from napari_sslseg.bench.timeaxis import train_for

    now = [0.0]

    def clock():
        now[0] += 10.0
        return now[0]

    seen = []

    def scorer(trainer, annotated):
        seen.append(trainer.step)
        now[0] += 1000.0
        return Scores({"a": 0.5}, {"a": 1.0})

    ds = sample_dataset()
    run_ = train_for(ds, [20, 40], 0, "supervised", [40.0, 20.0, 60.0], 0, 1, scorer, clock=clock)
    assert [p.target for p in run_.points] == [20.0, 40.0, 60.0]
    # the build spans two readings of the clock (20 s), each step one (10 s)
    assert [p.step for p in run_.points] == [1, 3, 5] and [p.seconds for p in run_.points] == [20.0, 40.0, 60.0]
    assert seen == [1, 3, 5] and run_.score_seconds == pytest.approx(3 * 1010.0) and run_.ended == ""


def test_time_axis_scores_the_rest_where_the_engine_ends_first(monkeypatch):
    import napari_sslseg.bench.timeaxis as timeaxis
    from napari_sslseg.bench.protocol import Scores

    monkeypatch.setattr(timeaxis, "MAX_STEPS_PER_SECOND", 0.01)  # 100 s -> 2 steps
    ds = sample_dataset()
    run_ = timeaxis.train_for(ds, [20, 40], 0, "supervised", [50.0, 100.0], 0, 1,
                              lambda trainer, annotated: Scores({"a": float(trainer.step)}, {"a": 0.0}))
    assert [p.target for p in run_.points] == [50.0, 100.0] and [p.step for p in run_.points] == [2, 2]
    assert "ended by the engine" in run_.ended


def test_time_axis_plans_the_engines_schedules_by_its_time_budget():
    import napari_sslseg.bench.timeaxis as timeaxis

    settings = timeaxis.train_settings(120.0, 3)
    assert settings["steps"] >= 120 * 100 and settings["seed"] == 3 and settings["time_budget"] == 120.0
    assert "time_budget" in timeaxis.schedule_note()


def test_time_axis_runs_each_seed_against_the_clock_and_reports_their_mean(monkeypatch):
    import napari_sslseg.bench.runner as runner
    from napari_sslseg.bench.protocol import Scores
    from napari_sslseg.bench.report import time_section
    from napari_sslseg.bench.timeaxis import TimePoint, TimeRun

    def fake_train_for(ds, annotated, axis, method, times, seed, threads, scorer):
        dice = {0: 0.5, 1: 0.7}[seed]
        return TimeRun(method, len(annotated), seed, [TimePoint(t, t, 10, Scores({"a": dice}, {"a": 4.0 + 2 * seed}))
                                                      for t in sorted(times)])

    monkeypatch.setattr(runner, "train_for", fake_train_for)
    monkeypatch.setattr(runner, "_setup", lambda *a: None)
    cfg = BenchConfig(methods=["supervised"], time_ks=[2], times=[1.0, 2.0], seeds=[0, 1], time_seeds=[0, 1])
    assert runner.time_trainings_planned(cfg) == 2
    assert BenchConfig(seeds=[3, 4]).timed_seeds() == [3]  # one seed unless asked: each is a whole run against the clock
    ticks = []
    tl = runner.run_time_axis(sample_dataset(), cfg, 0, threads=1, tick=ticks.append)
    assert [(r.method, r.seed) for r in tl.runs] == [("supervised", 0), ("supervised", 1)] and sum(ticks) == 2
    text = "\n".join(time_section(tl, [], 1))
    assert "| supervised | 0.600 ± 0.100 (5.0) | 0.600 ± 0.100 (5.0) |" in text
    assert "seeds 0, 1, each a run of its own" in text and "supervised (seed 1) 10 steps" in text
    args = parse(SAMPLE_ARGS + ["--time-seeds", "0,1"])
    assert config_from_args(args).timed_seeds() == [0, 1]


@pytest.mark.slow
def test_time_axis_on_a_tiny_budget_scores_the_whole_volume():
    from napari_sslseg.bench.runner import run_time_axis

    ds = sample_dataset()
    cfg = BenchConfig(methods=["supervised", "entropy_min"], time_methods=["supervised"], time_ks=[2, 3],
                      times=[0.3, 0.6], seeds=[0], score_stride=4, threads=1)
    tl = run_time_axis(ds, cfg, 0, threads=1)
    assert tl.times == [0.3, 0.6] and list(tl.annotated) == [2, 3] and tl.threads == 1
    assert [(r.method, r.k) for r in tl.runs] == [("supervised", 2), ("supervised", 3)]
    for r in tl.runs:
        assert [p.target for p in r.points] == [0.3, 0.6]
        assert all(p.seconds >= p.target and p.step >= 1 for p in r.points)
        assert set(r.points[0].scores.dice) == set(ds.class_names[1:])
        assert all(0.0 <= p.scores.mean_dice <= 1.0 for p in r.points)


def test_the_annotated_only_row_trains_supervised_without_the_prior():
    """The literature's supervised baseline: the annotated slices alone, no prior as input or target
    (the registered ``supervised`` has both), so its prediction is the network's own."""
    from napari_sslseg.bench.config import method_settings
    from napari_sslseg.bench.datasets import Dataset
    from napari_sslseg.bench.protocol import trainer_for

    z, y, x = np.mgrid[0:12, 0:32, 0:32]
    labels = (((y - 16) ** 2 + (x - 16) ** 2) < 36).astype(np.uint8)
    ds = Dataset("disc", (labels * 100).astype(np.float32), labels, (1.0, 1.0, 1.0), ["background", "disc"], "synthetic")
    method, settings = method_settings("annotated_only")
    alone = trainer_for(ds, [2, 9], 0, method, steps=1, **settings)
    assert method == "supervised" and not alone.priors and not alone.config.prior_input and alone.prior_weight() == 0
    assert trainer_for(ds, [2, 9], 0, "supervised", steps=1).priors  # the registered method has the prior
    assert method_settings("mean_teacher") == ("mean_teacher", {})
