"""The training loop: events, commands, repeatability, new annotations mid-run."""

from __future__ import annotations

import numpy as np
import pytest

from napari_sslseg.config import TrainConfig
from napari_sslseg.data import Volume
from napari_sslseg.errors import InputError
from napari_sslseg.events import (
    AnnotationsEvent,
    EvalEvent,
    FinishedEvent,
    MessageEvent,
    Pause,
    PausedEvent,
    PreviewEvent,
    Resume,
    StepEvent,
    Stop,
    UpdateLabels,
)
from napari_sslseg.training import Trainer


def cfg(**kw):
    base = dict(steps=6, patch=32, width=8, batch_labelled=2, batch_unlabelled=2, eval_every=3, seed=0)
    base.update(kw)
    return TrainConfig(**base)


def test_events_in_order(tiny_volume):
    events = list(Trainer([tiny_volume], "mean_teacher", cfg(preview_every=3)).run())
    steps = [e for e in events if isinstance(e, StepEvent)]
    assert [e.step for e in steps] == [1, 2, 3, 4, 5, 6]
    s = steps[-1]
    assert {"supervised", "consistency", "total"} <= set(s.losses)
    assert s.weights["consistency"] > 0 and s.lr > 0 and s.steps_per_second > 0 and s.eta_seconds >= 0
    evals = [e for e in events if isinstance(e, EvalEvent)]
    assert [e.step for e in evals] == [3, 6] and 0 <= evals[-1].mean_dice <= 1
    previews = [e for e in events if isinstance(e, PreviewEvent)]
    # the propagation prior comes first, before any step; then the network's previews
    assert [p.step for p in previews] == [0, 3, 6]
    assert previews[0].prediction.uncertainty_kind == "entropy"
    assert np.array_equal(previews[0].prediction.labels[[2, 6, 10]], tiny_volume.labels[[2, 6, 10]])
    assert previews[1].prediction.labels.shape == tiny_volume.image.shape
    assert isinstance(events[-1], FinishedEvent) and events[-1].reason == "completed"


def test_seeded_cpu_runs_repeat(tiny_volume):
    a = [e.losses for e in Trainer([tiny_volume], "ua_mt", cfg(steps=3)).run() if isinstance(e, StepEvent)]
    b = [e.losses for e in Trainer([tiny_volume], "ua_mt", cfg(steps=3)).run() if isinstance(e, StepEvent)]
    assert a == b


def test_stop_pause_resume_via_send_and_submit(tiny_volume):
    trainer = Trainer([tiny_volume], "supervised", cfg(steps=50, eval_every=0))
    gen = trainer.run()
    assert isinstance(next(gen), StepEvent)
    ev = gen.send(Pause())
    assert isinstance(ev, PausedEvent)
    step = trainer.step
    for _ in range(3):
        assert isinstance(next(gen), PausedEvent)
    assert trainer.step == step  # no training while paused
    trainer.submit(Resume())
    assert isinstance(next(gen), StepEvent) and trainer.step == step + 1
    trainer.submit(Stop())
    rest = list(gen)
    assert isinstance(rest[-1], FinishedEvent) and rest[-1].reason == "stopped"
    assert trainer.step == step + 1


def test_new_annotations_join_without_restart(tiny_volume):
    trainer = Trainer([tiny_volume], "mean_teacher", cfg(steps=20, eval_every=0))
    gen = trainer.run()
    next(gen)
    new = tiny_volume.labels.copy()
    new[4] = (tiny_volume.image[4] > 50).astype(np.uint8)
    trainer.submit(UpdateLabels(0, new))
    ev = next(gen)
    assert isinstance(ev, AnnotationsEvent) and ev.annotated == [2, 4, 6, 10]
    assert (0, 4) in trainer.pool.labelled and (0, 4) not in trainer.pool.unlabelled
    assert trainer.step == 1  # same run, same model
    # a class the model does not know is refused and the old labels stay
    bad = new.copy()
    bad[8] = 3
    trainer.submit(UpdateLabels(0, bad))
    ev = next(gen)
    assert isinstance(ev, MessageEvent) and "class 3" in ev.text
    assert (0, 8) not in trainer.pool.labelled
    assert isinstance(list(gen)[-1], FinishedEvent)


def test_unlabelled_volume_is_used(tiny_volume):
    other = Volume(np.flip(tiny_volume.image, 2).copy(), name="unlabelled")
    trainer = Trainer([tiny_volume, other], "entropy_min", cfg(steps=2))
    assert any(v == 1 for v, _ in trainer.pool.unlabelled)
    assert isinstance(list(trainer.run())[-1], FinishedEvent)


def test_bad_config(tiny_volume):
    from napari_sslseg.errors import InputError

    with pytest.raises(InputError, match="multiple of 16"):
        Trainer([tiny_volume], "supervised", cfg(patch=40))
    with pytest.raises(InputError, match="no usable CUDA"):
        import torch

        if torch.cuda.is_available():
            pytest.skip("a GPU is present")
        Trainer([tiny_volume], "supervised", cfg(device="cuda"))


def test_dropout_scope_places_dropout(tiny_volume):
    from napari_sslseg.networks import LastBlockSampler, build_unet
    from torch import nn

    def dropouts(net):
        return [m for m in net.modules() if isinstance(m, nn.Dropout2d)]

    last = build_unet(3, width=8, dropout_scope="last")
    assert dropouts(last) == [LastBlockSampler(last).dropout]
    assert len(dropouts(build_unet(3, width=8, dropout_scope="all"))) > 10
    with pytest.raises(InputError, match="dropout_scope = 'middle' is not allowed"):
        Trainer([tiny_volume], "supervised", TrainConfig(steps=1, dropout_scope="middle"))


def test_time_budget_ends_the_run_and_drives_the_schedules(tiny_volume):
    trainer = Trainer([tiny_volume], "mean_teacher", cfg(steps=10**6, time_budget=1.5, eval_every=0))
    events = list(trainer.run())
    steps = [e for e in events if isinstance(e, StepEvent)]
    assert events[-1].reason == "completed" and trainer.train_seconds >= 1.5
    assert len(steps) < 10**6 and steps[-1].eta_seconds == 0
    assert steps[-1].total <= len(steps) + 1
    # the schedules count towards the steps the budget is projected to hold at the speed so far,
    # not towards the million-step ceiling: half the time spent, half the steps done
    trainer.step, trainer.train_seconds = 40, 0.75
    assert trainer.total_steps() == 80
    assert trainer.prior_weight() == pytest.approx(trainer.config.prior_weight * (1.0 - 0.5 * 0.5))


def test_prior_term_pulls_the_student_towards_the_prior(tiny_volume):
    """The prior's pseudo-labels reach the student through the unannotated slices' logits: a loss
    with gradient there, weighted, and absent when switched off."""
    import torch

    from napari_sslseg.training import prior_loss

    trainer = Trainer([tiny_volume], "supervised", cfg(steps=2, eval_every=0))
    step = next(e for e in trainer.run() if isinstance(e, StepEvent))
    assert step.losses["prior"] > 0 and step.weights["prior"] == pytest.approx(trainer.config.prior_weight)
    off = Trainer([tiny_volume], "supervised", cfg(steps=2, eval_every=0, prior_weight=0))
    assert "prior" not in next(e for e in off.run() if isinstance(e, StepEvent)).losses

    logits = torch.zeros(2, 2, 8, 8, requires_grad=True)
    q = torch.zeros(2, 2, 8, 8)
    q[:, 1, 2:6, 2:6] = 1
    q[:, 0] = 1 - q[:, 1]
    loss = prior_loss(logits, q, torch.ones(2, 1, 8, 8))
    loss.backward()
    g = logits.grad
    assert g[:, 1, 3, 3].lt(0).all() and g[:, 1, 0, 0].gt(0).all()  # raise the structure inside, lower it outside
    zero = torch.zeros(2, 2, 8, 8, requires_grad=True)
    prior_loss(zero, q, torch.zeros(2, 1, 8, 8)).backward()
    assert zero.grad.abs().max() == 0  # no confidence, no pull


def test_foreground_crops_find_a_small_structure():
    """A 3x3 structure in a 128x128 slice: class-centred 32x32 crops hold it in about half the
    labelled patches (background is the other class drawn), random crops almost never."""
    rng = np.random.default_rng(0)
    image = rng.normal(0, 1, (5, 128, 128)).astype(np.float32)
    labels = np.zeros(image.shape, np.uint8)
    labels[2, 100:103, 10:13] = 1
    vol = Volume(image, labels=labels, annotated=[2], name="speck")

    def hits(foreground_crops):
        trainer = Trainer([vol], "supervised", cfg(foreground_crops=foreground_crops, augment=False, prior_weight=0))
        ys = [trainer._batch([(0, 2)] * 8, labelled=True)[1] for _ in range(10)]
        return sum(int(y[i].max() > 0) for y in ys for i in range(len(y)))

    assert hits(True) >= 25
    assert hits(False) <= 10


def test_complete_labels_draw_the_few_slices_that_hold_structures():
    """Every one of 40 slices annotated, a structure on 2 of them (complete labels, mostly
    background): the labelled draws hold it about half the time (one class of two), where a
    uniform draw over the slices would give it 1 time in 20; new labels are taken into the draw."""
    rng = np.random.default_rng(0)
    image = rng.normal(0, 1, (40, 32, 32)).astype(np.float32)
    labels = np.zeros(image.shape, np.uint8)
    labels[[9, 30], 10:20, 10:20] = 1
    vol = Volume(image, labels=labels, annotated=list(range(40)), name="complete")
    trainer = Trainer([vol], "supervised", cfg(prior_weight=0))
    draws = trainer._sample_labelled(400)
    assert sum(s in (9, 30) for _, s in draws) >= 150
    new = labels.copy()
    new[30] = 0
    new[20, 5:9, 5:9] = 1
    trainer.submit(UpdateLabels(0, new, list(range(40))))
    trainer._apply_commands()
    draws = trainer._sample_labelled(400)
    assert sum(s == 20 for _, s in draws) >= 100
    assert sum(s == 30 for _, s in draws) <= 40


def test_prior_follows_new_annotations(tiny_volume):
    trainer = Trainer([tiny_volume], "supervised", cfg(steps=20, eval_every=0))
    gen = trainer.run()
    next(gen)
    new = tiny_volume.labels.copy()
    new[4] = (tiny_volume.image[4] > 50).astype(np.uint8)
    trainer.submit(UpdateLabels(0, new))
    next(gen)
    assert trainer.priors[0].annotated == [2, 4, 6, 10]
    gen.close()


def test_labels_sent_as_a_list_are_taken_and_ragged_ones_warned(tiny_volume):
    """New labels as a nested list used to kill the loop with an AttributeError."""
    trainer = Trainer([tiny_volume], "supervised", cfg(steps=20, eval_every=0))
    gen = trainer.run()
    next(gen)
    new = tiny_volume.labels.copy()
    new[4] = (tiny_volume.image[4] > 50).astype(np.uint8)
    trainer.submit(UpdateLabels(0, new.tolist()))
    ev = next(gen)
    assert isinstance(ev, AnnotationsEvent) and ev.annotated == [2, 4, 6, 10]
    trainer.submit(UpdateLabels(0, [[0, 1], [1]]))
    ev = next(gen)
    assert isinstance(ev, MessageEvent) and ev.level == "warning"
    assert ev.text == ("New labels not used: The labels (list) are not an array of one shape; "
                       "give a (z, y, x) array of class numbers.")
    trainer.submit(Stop())
    assert list(gen)[-1].reason == "stopped" and trainer.pool.labelled == [(0, s) for s in (2, 4, 6, 10)]


def test_background_only_annotations_are_refused_before_training(tiny_volume):
    """Slices marked as background, and nothing painted: training used to run and print Dice "nan ()"."""
    message = ("The annotated slices hold background only: paint at least one structure (a non-zero class) "
               "on one of them; there is nothing to learn to segment yet.")
    empty = Volume(tiny_volume.image, labels=np.zeros_like(tiny_volume.labels), annotated=[2, 6], name="empty")
    with pytest.raises(InputError) as info:
        Trainer([empty], "supervised", cfg())
    assert str(info.value) == message
    # erasing every structure mid-run is a warning; the painted labels stay in use
    trainer = Trainer([tiny_volume], "supervised", cfg(steps=20, eval_every=0))
    gen = trainer.run()
    next(gen)
    trainer.submit(UpdateLabels(0, np.zeros_like(tiny_volume.labels), annotated=[2, 6]))
    ev = next(gen)
    assert isinstance(ev, MessageEvent) and ev.text == f"New labels not used: {message}"
    assert trainer.pool.labelled == [(0, 2), (0, 6), (0, 10)]
    trainer.submit(Stop())
    list(gen)


def test_a_0_255_mask_trains_two_classes_and_predicts_in_its_values(tiny_volume, tmp_path):
    """A binary mask saved as 0/255 used to train a 256-class model."""
    from napari_sslseg import checkpoint
    from napari_sslseg.inference import predict_annotated_volume
    from napari_sslseg.checkpoint import load_model

    mask = Volume(tiny_volume.image, labels=tiny_volume.labels * 255, name="mask")
    trainer = Trainer([mask], "supervised", cfg(steps=3, preview_every=3), checkpoint=tmp_path / "model.pt")
    assert trainer.num_classes == 2
    events = list(trainer.run())
    notes = [e.text for e in events if isinstance(e, MessageEvent)]
    assert notes[0] == ("The labels use values 0, 255: trained as classes 0, 1 (255 -> 1); "
                        "predictions use your values.")
    previews = [e.prediction.labels for e in events if isinstance(e, PreviewEvent)]
    assert all(set(np.unique(p)) <= {0, 255} for p in previews) and (previews[0] == 255).any()
    assert checkpoint.load(tmp_path / "model.pt")["label_values"] == [0, 255]
    model = load_model(tmp_path)
    pred = predict_annotated_volume(model, Volume(tiny_volume.image, labels=tiny_volume.labels * 255),
                                    mc_passes=0)
    assert set(np.unique(pred.labels)) <= {0, 255} and (pred.labels == 255).any()


def test_new_labels_in_another_value_are_refused_when_values_are_mapped(tiny_volume):
    mask = Volume(tiny_volume.image, labels=tiny_volume.labels * 255, name="mask")
    trainer = Trainer([mask], "supervised", cfg(steps=20, eval_every=0))
    gen = trainer.run()
    while not isinstance(next(gen), StepEvent):
        pass
    new = tiny_volume.labels * 255
    new[4, 10:14, 10:14] = 255
    trainer.submit(UpdateLabels(0, new))
    ev = next(gen)
    assert isinstance(ev, AnnotationsEvent) and 4 in ev.annotated
    assert trainer.pool.volumes[0].labels.max() == 1  # classes inside the engine
    new[8, 10:14, 10:14] = 7
    trainer.submit(UpdateLabels(0, new))
    ev = next(gen)
    assert ev.text == ("New labels not used: The labels hold value 7, which this model was not trained on "
                       "(values 0, 255); start a new training to add a class.")
    trainer.submit(Stop())
    list(gen)


def test_class_names_for_every_value_keep_the_users_numbering(tiny_volume):
    gap = Volume(tiny_volume.image, labels=tiny_volume.labels * 2, name="gap")
    assert Trainer([gap], "supervised", cfg(), class_names=["background", "unused", "disc"]).num_classes == 3
    mapped = Trainer([gap], "supervised", cfg())
    assert mapped.num_classes == 2 and mapped.label_values == [0, 2]


@pytest.mark.parametrize("nearby", [0.5, 0.0])
def test_a_class_on_one_slice_is_in_that_slices_prior_input_at_times(tiny_volume, monkeypatch, nearby):
    """A second class painted on one annotated slice only: left out, that slice's prior input never
    holds it, and the network learns to ignore the prior of such a class; half the time the input is
    the prior of a slice nearby, which holds it, tapering."""
    import napari_sslseg.training as training

    monkeypatch.setattr(training, "_PRIOR_NEARBY", nearby)
    labels = tiny_volume.labels.copy()
    labels[6][labels[6] == 1] = 2
    volume = Volume(tiny_volume.image, (1.0, 1.0, 1.0), labels, name="two classes")
    trainer = Trainer([volume], "supervised", cfg(steps=1), class_names=["background", "disc", "core"])
    seen = sum(float(trainer._prior_slice((0, 6), leave_out=True)[0][2].max()) > 0.5 for _ in range(40))
    assert (seen > 5) if nearby else (seen == 0), seen


def test_neighbouring_slices_reach_the_network_and_a_saved_model(tiny_volume, tmp_path):
    """2.5D: with ``context=1`` the network's input holds the slice, the slice below and the slice
    above (then the prior); a saved model predicts with the same inputs."""
    from napari_sslseg.inference import predict_volume
    from napari_sslseg.checkpoint import load_model

    stack = tiny_volume.image_stack(0, 1)
    assert stack.shape == (3, *tiny_volume.slice_shape)
    np.testing.assert_array_equal(stack[1], tiny_volume.image_slice(0))  # below slice 0: repeated
    np.testing.assert_array_equal(stack[2], tiny_volume.image_slice(1))
    trainer = Trainer([tiny_volume], "supervised", cfg(steps=2, eval_every=0, context=1))
    x, _ = trainer._batch([(0, 5)], labelled=True)
    assert x.shape[1] == 3 + trainer.num_classes - 1
    for _ in trainer.run():
        pass
    path = trainer.save(tmp_path / "model.pt")
    model = load_model(path)
    assert model.context == 1
    prediction = predict_volume(model, tiny_volume, mc_passes=0)
    assert prediction.labels.shape == tiny_volume.image.shape
