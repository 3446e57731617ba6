"""Every registered method, tested the moment it is registered: on tiny tensors, table-driven
over the registry, plus one short loop run per method for what only the loop shows."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_sslseg import checkpoint
from napari_sslseg.config import TrainConfig
from napari_sslseg.methods import METHODS, StepContext, create_method, student_pass, supervised_loss
from napari_sslseg.networks import build_unet
from napari_sslseg.training import Trainer

ALL = sorted(METHODS)
SEMI = sorted(n for n, c in METHODS.items() if c.uses_unlabelled)
C = 3  # classes of the tiny tensors
IN = 3  # network input channels: the image and the prior's two foreground classes, as the loop builds them


#: Options that let a method act on an untrained network: UniMatch's pseudo-labels need a
#: confidence of 0.95, which no pixel of a random network reaches.
OPTIONS = {"unimatch": {"threshold": 0.0}}


def tiny(name: str, seed: int = 0, dropout_scope: str = "last"):
    """A width-4 student and the method ``name`` on it."""
    torch.manual_seed(seed)
    student = build_unet(C, width=4, dropout=0.1, in_channels=IN, dropout_scope=dropout_scope)
    return student, create_method(name, student, C, OPTIONS.get(name))


def context(step: int = 99, total: int = 100, seed: int = 0, unlabelled: bool = True) -> StepContext:
    """Two annotated and two unannotated 32x32 slices; by default at the end of the run, ramps done."""
    g = torch.Generator().manual_seed(seed)
    x_l, x_u = torch.randn(2, IN, 32, 32, generator=g), torch.randn(2, IN, 32, 32, generator=g)
    y_l = torch.randint(0, C, (2, 1, 32, 32), generator=g)
    return StepContext(step, total, C, x_l, y_l, x_u if unlabelled else None)


def student_outputs(student, method, ctx) -> list[torch.Tensor]:
    """The loop's start of a step: the method's views, then the student's one pass; returns the
    student's logits of unannotated slices and of every view."""
    student.train()
    method.prepare(ctx)
    student_pass(student, ctx, unlabelled=method.reads_unlabelled_logits)  # as the loop without its prior term
    return [o for o in (ctx.logits_unlabelled, *ctx.view_logits.values()) if o is not None]


def gradient_through(outputs: list[torch.Tensor], terms: dict) -> float:
    """How much gradient the weighted terms send into the student through ``outputs`` (the logits
    of unannotated slices and views), whatever the labelled logits carry."""
    total = sum(w * v for v, w in terms.values() if w)
    if not (torch.is_tensor(total) and total.requires_grad):
        return 0.0
    outputs = [o for o in outputs if o.requires_grad]
    grads = torch.autograd.grad(total, outputs, allow_unused=True, retain_graph=True)
    return float(sum(g.abs().sum() for g in grads if g is not None))


def params(module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in module.parameters()]


def moved(module, before) -> float:
    return sum(float((p.detach() - b).abs().sum()) for p, b in zip(module.parameters(), before))


# ----- the unlabelled loss -----
def check_unlabelled_gradient(name: str) -> None:
    """The method's unlabelled terms are finite and send gradient into the student through the logits
    of the unannotated slices (and of its views, and of any student pass it runs itself)."""
    student, method = tiny(name)
    ctx = context()
    outputs = student_outputs(student, method, ctx)
    terms = method.unlabelled_loss(ctx)
    outputs += [v for v in ctx.view_logits.values() if all(v is not o for o in outputs)]  # passes the method ran itself
    assert terms, f"{name} contributes no unlabelled term"
    assert all(torch.isfinite(v) for v, _ in terms.values()), terms
    assert gradient_through(outputs, terms) > 0, f"{name}: no gradient reaches the student through its unannotated slices"


@pytest.mark.parametrize("name", SEMI)
def test_unlabelled_loss_reaches_the_student_through_unlabelled_logits(name):
    check_unlabelled_gradient(name)


@pytest.mark.parametrize("name", SEMI)
def test_a_detached_unlabelled_branch_fails_that_check(name, monkeypatch):
    """The check above must see a detached unlabelled branch, whatever else carries gradient:
    adversarial's labelled term, CPS's second network and DAN's evaluator still do, but none through
    the unannotated logits. Here every student output the method's unlabelled loss reads is detached
    (the loop's pass and the passes it runs itself), as a bug would detach them."""
    cls = METHODS[name]
    original = cls.unlabelled_loss

    def detached(self, ctx):
        if ctx.logits_unlabelled is not None:
            ctx.logits_unlabelled = ctx.logits_unlabelled.detach()
        ctx.view_logits = {k: v.detach() for k, v in ctx.view_logits.items()}
        hook = self.student.register_forward_hook(lambda module, args, out: out.detach())
        try:
            return original(self, ctx)
        finally:
            hook.remove()

    monkeypatch.setattr(cls, "unlabelled_loss", detached)
    with pytest.raises(AssertionError, match="no gradient reaches the student"):
        check_unlabelled_gradient(name)


@pytest.mark.parametrize("name", SEMI)
def test_unlabelled_terms_ramp_up_from_near_zero(name):
    """At step 0 no unlabelled term weighs more than at the end (ramps start low)."""
    student, method = tiny(name)
    weights = {}
    for step in (0, 99):
        ctx = context(step=step)
        student_outputs(student, method, ctx)
        weights[step] = {k: w for k, (_, w) in method.unlabelled_loss(ctx).items()}
    assert all(weights[0][k] <= weights[99][k] + 1e-12 for k in weights[99])


# ----- extra models -----
def one_step(student, method, ctx, optimizer) -> dict:
    """One step as the loop takes it (without the prior term, which is the loop's own)."""
    student_outputs(student, method, ctx)
    terms = method.unlabelled_loss(ctx) if ctx.x_unlabelled is not None else {}
    total = supervised_loss(ctx.logits_labelled.float(), ctx.y_labelled) + sum(w * v for v, w in terms.values() if w)
    optimizer.zero_grad(set_to_none=True)
    total.backward()
    optimizer.step()
    return method.after_step(ctx)


WITH_EXTRA = [n for n in ALL if tiny(n)[1].extra_models()]


@pytest.mark.parametrize("name", WITH_EXTRA)
@pytest.mark.parametrize("unlabelled", [True, False])
def test_extra_models_get_their_updates(name, unlabelled):
    """A teacher follows the student, a discriminator takes its step, a co-trained network learns:
    also in a step without unannotated slices, except for what only they teach."""
    student, method = tiny(name)
    extra = method.extra_models()
    before = {k: params(m) for k, m in extra.items()}
    optimizer = torch.optim.AdamW([*student.parameters(), *method.joint_parameters()], lr=1e-2)
    logged = one_step(student, method, context(step=0, unlabelled=unlabelled), optimizer)
    assert all(np.isfinite(v) for v in logged.values()), logged
    for k, m in extra.items():
        learns_from_unlabelled_only = k in ("evaluator", "second")  # DAN's evaluator, CPS's second network
        if unlabelled or not learns_from_unlabelled_only:
            assert moved(m, before[k]) > 0, f"{name}: its {k} did not change in a step"
        if k == "teacher":
            assert all(p.grad is None and not p.requires_grad for p in m.parameters()), "a teacher learns by EMA only"


@pytest.mark.parametrize("name", [n for n in WITH_EXTRA if tiny(n)[1]._optimizers()])
def test_a_discriminator_learns_to_tell(name):
    """Its own steps on fixed predictions lower its own loss (at a learning rate that shows it in 20 steps)."""
    torch.manual_seed(0)
    student = build_unet(C, width=4, dropout=0.1, in_channels=IN)
    method = create_method(name, student, C, {"lr": 1e-3})
    ctx = context()
    with torch.no_grad():
        student_outputs(student, method, ctx)
    losses = [next(iter(method.after_step(ctx).values())) for _ in range(20)]
    assert np.mean(losses[-5:]) < np.mean(losses[:5]), losses


@pytest.mark.parametrize("name", ALL)
def test_method_state_round_trips_every_extra_model(name):
    """state_dict -> a new method on a new student -> load_state_dict: every extra model and
    optimiser comes back, and the checkpoint check accepts the state."""
    student, method = tiny(name)
    optimizer = torch.optim.AdamW([*student.parameters(), *method.joint_parameters()], lr=1e-2)
    for step in range(2):
        one_step(student, method, context(step=step, seed=step), optimizer)
    state = method.state_dict()
    assert set(method.extra_models()) <= set(state)
    _, fresh = tiny(name, seed=1)
    fresh.load_state_dict(state)
    for k, m in method.extra_models().items():
        other = fresh.extra_models()[k].state_dict()
        assert all(torch.equal(v, other[n]) for n, v in m.state_dict().items()), f"{name}: {k} did not come back"
    for k, opt in method._optimizers().items():
        assert fresh._optimizers()[k].state_dict()["state"].keys() == opt.state_dict()["state"].keys()
    payload = {"num_classes": C, "method": name, "model": student.state_dict(), "method_state": state,
               "config": {**TrainConfig(width=4).to_dict(), "prior_input": True}}
    checkpoint.validate(payload)


@pytest.mark.parametrize("name", ALL)
def test_maps_are_named_and_in_range(name):
    student, method = tiny(name)
    x = torch.randn(2, IN, 32, 32)
    with torch.no_grad():
        p = torch.softmax(student(x), dim=1)
        maps = method.maps(x, p, costly=True)
    for k, m in maps.items():
        assert m.shape == (2, 32, 32) and float(m.min()) >= 0 and float(m.max()) <= 1, k


# ----- through the loop -----
def small_config(steps=3, **kw) -> TrainConfig:
    return TrainConfig(steps=steps, patch=32, width=4, batch_labelled=2, batch_unlabelled=2, eval_every=0, seed=0, **kw)


#: The loop itself, in the fast tier, with a teacher and with a discriminator of its own optimiser;
#: every other registered method in the full tier.
LOOP_FAST = ("mean_teacher", "adversarial")


@pytest.mark.parametrize("name", [n if n in LOOP_FAST else pytest.param(n, marks=pytest.mark.slow) for n in ALL])
def test_loop_runs_saves_and_resumes(tiny_volume, tmp_path, name):
    """Two steps of the real loop: finite losses; the checkpoint holds every extra model and a
    resumed run starts from them."""
    trainer = Trainer([tiny_volume], name, small_config(2))
    events = [e for e in trainer.run() if hasattr(e, "losses")]
    assert len(events) == 2 and all(np.isfinite(v) for e in events for v in e.losses.values()), events[-1].losses
    path = trainer.save(tmp_path / "model.pt")
    resumed = Trainer([tiny_volume], config=small_config(3), resume=checkpoint.load(path))
    for k, m in trainer.method.extra_models().items():
        other = resumed.method.extra_models()[k].state_dict()
        assert all(torch.equal(v, other[n]) for n, v in m.state_dict().items()), k
    assert [e.step for e in resumed.run() if hasattr(e, "losses")] == [3]


@pytest.mark.parametrize("prior_weight, passed", [(0.0, 2 + 2 + 2), (0.3, 2 + 2 + 2 + 2)])
def test_the_student_sees_the_plain_unannotated_slices_only_where_something_reads_them(tiny_volume, prior_weight, passed):
    """bcp learns from its mixed slices alone: without the loop's prior term the student's pass holds
    the annotated slices and the two mixes, not the unannotated slices as they are (a quarter of the
    pass); with the prior term, which reads them, it does."""
    trainer = Trainer([tiny_volume], "bcp", small_config(1, prior_weight=prior_weight, prior_input=False),
                      method_options={"first_stage": 0.0})  # the mixed stage from the first step
    sizes = []
    hook = trainer.model.register_forward_hook(lambda module, args, out: sizes.append(len(args[0])))
    trainer.train_step()
    hook.remove()
    assert sizes[0] == passed, sizes


# ----- method-specific -----
def test_ua_mt_threshold_ramps_up():
    _, method = tiny("ua_mt")
    lo = method.threshold(context(step=0, total=100))
    hi = method.threshold(context(step=100, total=100))
    assert lo == pytest.approx(0.75 * np.log(C), rel=0.02)
    assert hi == pytest.approx(np.log(C))


def test_unknown_method_and_option(tiny_volume):
    from napari_sslseg.errors import InputError

    with pytest.raises(InputError, match="Unknown method 'nope'"):
        Trainer([tiny_volume], "nope", TrainConfig(steps=1))
    with pytest.raises(InputError, match="no option bogus"):
        Trainer([tiny_volume], "mean_teacher", TrainConfig(steps=1), method_options={"bogus": 1})


@pytest.mark.parametrize("scope", ["last", "all"])
def test_ua_mt_uncertainty_passes(scope):
    """With dropout before the classifier only, UA-MT's T samples share one teacher pass; with
    dropout everywhere the teacher runs T + 1 times (the target and T noisy passes)."""
    student, method = tiny("ua_mt", dropout_scope=scope)
    ctx = context()
    student_outputs(student, method, ctx)
    calls = []
    handle = method.teacher.register_forward_hook(lambda *a: calls.append(1))
    try:
        terms = method.unlabelled_loss(ctx)
    finally:
        handle.remove()
    assert len(calls) == (1 if scope == "last" else 1 + method.config.mc_passes)
    loss, weight = terms["consistency"]
    assert torch.isfinite(loss) and loss.requires_grad


def test_ua_mt_last_block_uncertainty_is_entropy_of_dropout_samples():
    _, method = tiny("ua_mt")
    x = context().x_unlabelled
    method.teacher_probabilities(x)
    u = method._uncertainty
    assert u.shape == (x.shape[0], 1, *x.shape[2:])
    assert float(u.min()) >= 0 and float(u.max()) <= np.log(C) + 1e-4
    # the samples differ (dropout is drawn anew), so the entropy is not that of one pass everywhere
    method.config.mc_passes = 1
    method.teacher_probabilities(x)
    assert not torch.allclose(method._uncertainty, u)


def test_transform_consistency_is_zero_for_an_equivariant_network():
    """A per-pixel network commutes with any warp: T(f(x)) = f(T(x)) inside the slice."""
    from napari_sslseg.methods.transform_consistency import random_affine, warp

    torch.manual_seed(0)
    net = torch.nn.Conv2d(IN, C, 1)
    x = torch.randn(4, IN, 32, 32)
    # right angles and mirrors map pixel centres onto pixel centres: exact
    theta = torch.tensor([[[1.0, 0, 0], [0, 1, 0]], [[-1.0, 0, 0], [0, 1, 0]], [[0, -1.0, 0], [1, 0, 0]], [[0, 1.0, 0], [1, 0, 0]]])
    np.testing.assert_allclose(warp(net(x), theta).detach(), net(warp(x, theta)).detach(), atol=1e-5)
    theta = random_affine(4, 15.0, 0.1, True)
    assert theta.shape == (4, 2, 3) and torch.all(theta[:, :, 2] == 0)
    det = torch.linalg.det(theta[:, :, :2]).abs()
    assert bool(((det >= 0.9**2 - 1e-6) & (det <= 1.1**2 + 1e-6)).all())


def test_mixup_and_ict_mix_each_slice_with_another():
    for name in ("mixup", "ict"):
        student, method = tiny(name)
        ctx = context()
        method.prepare(ctx)
        lam = ctx.notes["lam"]
        assert lam.shape == (2, 1, 1, 1) and bool(((lam >= 0) & (lam <= 1)).all())
        torch.testing.assert_close(ctx.views["mixed"], lam * ctx.x_unlabelled + (1 - lam) * ctx.x_unlabelled.roll(1, 0))


def test_cps_networks_start_apart_and_both_train():
    student, method = tiny("cps")
    assert any(not torch.equal(a, b) for a, b in zip(student.parameters(), method.second.parameters()))
    assert {id(p) for p in method.joint_parameters()} == {id(p) for p in method.second.parameters()}


def test_bcp_pastes_annotated_pairs_first_then_both_ways():
    student, method = tiny("bcp")
    early, late = context(step=0), context(step=99)
    method.prepare(early)
    method.prepare(late)
    assert set(early.views) == {"labelled pasted"}
    assert set(late.views) == {"unlabelled outside", "labelled outside"}
    mask = late.notes["mask"]
    assert int((mask == 0).sum()) == int(32 * 2 / 3) ** 2  # one 2/3 x 2/3 region
    inside = mask[0, 0] == 0
    torch.testing.assert_close(late.views["unlabelled outside"][0][:, inside], late.x_labelled[0][:, inside])
    torch.testing.assert_close(late.views["unlabelled outside"][0][:, ~inside], late.x_unlabelled[0][:, ~inside])


def test_bcp_pseudo_labels_keep_each_class_largest_piece():
    from napari_sslseg.methods.bcp import largest_pieces

    labels = torch.zeros(1, 16, 16, dtype=torch.long)
    labels[0, 1:6, 1:6] = 1  # 25 pixels
    labels[0, 10:12, 10:12] = 1  # a stray piece of 4
    labels[0, 12:14, 1:3] = 2
    out = largest_pieces(labels, 3)
    assert int((out == 1).sum()) == 25 and int((out == 2).sum()) == 4 and int(out[0, 10, 10]) == 0


def test_unimatch_teaches_nothing_where_the_weak_view_is_unsure():
    """At the official 0.95 threshold a random network is confident nowhere: no pseudo-label, no gradient."""
    torch.manual_seed(0)
    student = build_unet(C, width=4, dropout=0.1, in_channels=IN)
    with torch.no_grad():  # every class equally likely everywhere
        student.final_conv.weight.zero_()
        student.final_conv.bias.zero_()
    method = create_method("unimatch", student, C)
    ctx = context()
    outputs = student_outputs(student, method, ctx)
    terms = method.unlabelled_loss(ctx)
    assert set(terms) == {"strong_1", "strong_2", "feature_perturbed"}
    assert all(float(v.detach()) == 0 for v, _ in terms.values())
    assert gradient_through(outputs + [ctx.view_logits["feature perturbed"]], terms) == 0


def test_unimatch_feature_perturbation_drops_encoder_channels():
    student, method = tiny("unimatch")
    student.eval()  # no dropout of the network's own: what differs is the perturbation
    x = torch.randn(2, IN, 32, 32)
    with torch.no_grad():
        clean, perturbed = student(x), method.feature_perturbed(x)
        again = student(x)
    assert not torch.allclose(clean, perturbed)
    torch.testing.assert_close(clean, again)  # the hooks are gone afterwards
