"""Every registered method, tested the moment it is registered."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_sslseg.config import TrainConfig
from napari_sslseg.methods import METHODS, StepContext
from napari_sslseg.training import Trainer

ALL = sorted(METHODS)
SEMI = sorted(n for n, c in METHODS.items() if c.uses_unlabelled)


def small_trainer(volume, method, steps=40, **kw):
    cfg = TrainConfig(steps=steps, patch=32, width=8, batch_labelled=2, batch_unlabelled=2, eval_every=0, seed=0, **kw)
    return Trainer([volume], method, cfg)


def _context(trainer, step=None):
    """One batch and the student's output on it, at ``step`` (default: the end of the run)."""
    cfg = trainer.config
    x_l, y_l = trainer._batch(trainer._sample(trainer.pool.labelled, 2), labelled=True)
    x_u = trainer._batch(trainer._sample(trainer.pool.unlabelled, 2), labelled=False)[0]
    trainer.model.train()
    logits = trainer.model(torch.cat([x_l, x_u]))
    step = cfg.steps if step is None else step
    return StepContext(step, cfg.steps, x_l, y_l, x_u, logits[:2], logits[2:], trainer.num_classes)


@pytest.mark.parametrize("name", ALL)
def test_losses_finite(tiny_volume, name):
    trainer = small_trainer(tiny_volume, name, steps=3)
    events = [e for e in trainer.run() if hasattr(e, "losses")]
    assert len(events) == 3
    for e in events:
        assert all(np.isfinite(v) for v in e.losses.values()), e.losses


@pytest.mark.parametrize("name", SEMI)
def test_unlabelled_term_puts_gradient_into_student(tiny_volume, name):
    trainer = small_trainer(tiny_volume, name)
    ctx = _context(trainer)
    terms = trainer.method.unlabelled_loss(ctx)
    assert terms, f"{name} contributes no unlabelled term"
    weighted = sum(w * v for v, w in terms.values() if w)
    assert torch.is_tensor(weighted) and weighted.requires_grad
    trainer.model.zero_grad()
    weighted.backward()
    grad = sum(p.grad.abs().sum() for p in trainer.model.parameters() if p.grad is not None)
    assert float(grad) > 0, f"{name}: the unlabelled loss carries no gradient to the student"


@pytest.mark.parametrize("name", [n for n in ALL if getattr(METHODS[n], "teacher_probabilities", None)])
def test_teacher_gets_no_gradient_and_follows_student(tiny_volume, name):
    trainer = small_trainer(tiny_volume, name)
    teacher = trainer.method.teacher
    before = [p.detach().clone() for p in teacher.parameters()]
    assert not any(p.requires_grad for p in teacher.parameters())
    trainer.train_step()
    trainer.train_step()
    assert all(p.grad is None for p in teacher.parameters())
    changed = sum(float((p - b).abs().sum()) for p, b in zip(teacher.parameters(), before))
    assert changed > 0, "the EMA teacher did not move after a step"


def test_adversarial_discriminator_learns(tiny_volume):
    trainer = small_trainer(tiny_volume, "adversarial", steps=30)
    d_losses = [e.losses["discriminator"] for e in trainer.run() if hasattr(e, "losses")]
    assert np.mean(d_losses[-5:]) < np.mean(d_losses[:5])


@pytest.mark.parametrize("name", ALL)
def test_short_run_lowers_supervised_loss(tiny_volume, name):
    trainer = small_trainer(tiny_volume, name, steps=40)
    sup = [e.losses["supervised"] for e in trainer.run() if hasattr(e, "losses")]
    assert np.mean(sup[-8:]) < 0.8 * np.mean(sup[:8]), sup


def test_ua_mt_threshold_ramps_up(tiny_volume):
    trainer = small_trainer(tiny_volume, "ua_mt", steps=100)
    lo = trainer.method.threshold(_context(trainer, step=0))
    hi = trainer.method.threshold(_context(trainer, step=100))
    assert lo == pytest.approx(0.75 * np.log(2), rel=0.02)
    assert hi == pytest.approx(np.log(2))


def test_unknown_method_and_option(tiny_volume):
    from napari_sslseg.errors import InputError

    with pytest.raises(InputError, match="Unknown method 'nope'"):
        Trainer([tiny_volume], "nope", TrainConfig(steps=1))
    with pytest.raises(InputError, match="no option bogus"):
        Trainer([tiny_volume], "mean_teacher", TrainConfig(steps=1), method_options={"bogus": 1})


@pytest.mark.parametrize("name", ["mean_teacher", "ua_mt", "adversarial"])
def test_extra_models_step_when_every_slice_is_annotated(tiny_volume, name):
    """No unannotated slice left: the teacher / discriminator must still follow training."""
    from napari_sslseg.data import Volume

    full = Volume(tiny_volume.image, labels=tiny_volume.labels, annotated=list(range(tiny_volume.num_slices)))
    trainer = small_trainer(full, name, steps=3)
    assert not trainer.pool.unlabelled
    extra = next(iter(trainer.method.extra_models().values()))
    before = [p.detach().clone() for p in extra.parameters()]
    list(trainer.run())
    assert sum(float((p.detach() - b).abs().sum()) for p, b in zip(extra.parameters(), before)) > 0


@pytest.mark.parametrize("scope", ["last", "all"])
def test_ua_mt_uncertainty_passes(tiny_volume, scope):
    """With dropout before the classifier only, UA-MT's T samples share one teacher pass; with
    dropout everywhere the teacher runs T + 1 times (the target and T noisy passes)."""
    trainer = small_trainer(tiny_volume, "ua_mt", dropout_scope=scope)
    calls = []
    handle = trainer.method.teacher.register_forward_hook(lambda *a: calls.append(1))
    ctx = _context(trainer)
    try:
        terms = trainer.method.unlabelled_loss(ctx)
    finally:
        handle.remove()
    assert len(calls) == (1 if scope == "last" else 1 + trainer.method.config.mc_passes)
    loss, weight = terms["consistency"]
    assert torch.isfinite(loss) and loss.requires_grad


def test_ua_mt_last_block_uncertainty_is_entropy_of_dropout_samples(tiny_volume):
    trainer = small_trainer(tiny_volume, "ua_mt")
    method = trainer.method
    x = _context(trainer).x_unlabelled
    method.teacher_probabilities(x)
    u = method._uncertainty
    assert u.shape == (x.shape[0], 1, *x.shape[2:])
    assert float(u.min()) >= 0 and float(u.max()) <= np.log(trainer.num_classes) + 1e-4
    # the samples differ (dropout is drawn anew), so the entropy is not that of one pass everywhere
    method.config.mc_passes = 1
    method.teacher_probabilities(x)
    assert not torch.allclose(method._uncertainty, u)
