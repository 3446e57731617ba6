"""One validation of every config field (type and range), used by the CLI, the panel and the API."""

from __future__ import annotations

from dataclasses import fields

import pytest

from napari_sslseg.config import PredictConfig, TrainConfig, field_help, validate
from napari_sslseg.errors import InputError
from napari_sslseg.methods import METHODS, method_config


def test_defaults_are_valid():
    validate(TrainConfig())
    validate(PredictConfig())
    for name in METHODS:
        method_config(name)


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("patch", 16, "patch = 16 is not allowed: it takes a whole number >= 32 and a multiple of 16."),
        ("patch", 40, "patch = 40 is not allowed: it takes a whole number >= 32 and a multiple of 16."),
        ("batch_labelled", 0, "batch_labelled = 0 is not allowed: it takes a whole number >= 1."),
        ("width", 0, "width = 0 is not allowed: it takes a whole number >= 1."),
        ("dropout", 1.5, "dropout = 1.5 is not allowed: it takes a number >= 0 and < 1."),
        ("lr", 0.0, "lr = 0.0 is not allowed: it takes a number > 0 and <= 1."),
        ("threads", -3, "threads = -3 is not allowed: it takes a whole number >= 0."),
        ("steps", 2.5, "steps = 2.5 is not allowed: it takes a whole number >= 1."),
        ("augment", "yes", "augment = 'yes' is not allowed: it takes true or false."),
        ("dropout_scope", "middle", "dropout_scope = 'middle' is not allowed: it takes one of last, all."),
        ("prior_weight", float("nan"), "prior_weight = nan is not allowed"),
    ],
)
def test_each_bad_value_is_one_line_naming_field_value_and_range(field, value, message):
    with pytest.raises(InputError) as info:
        validate(TrainConfig(**{field: value}))
    assert str(info.value).startswith(message) and "\n" not in str(info.value)


def test_every_bad_value_is_reported_and_numbers_take_their_fields_type():
    with pytest.raises(InputError) as info:
        validate(TrainConfig(batch_labelled=0, width=0, dropout=1.5))
    assert [line.split(" =")[0] for line in str(info.value).splitlines()] == ["batch_labelled", "width", "dropout"]
    config = validate(TrainConfig(lr=1, steps=3.0))
    assert type(config.lr) is float and type(config.steps) is int


@pytest.mark.parametrize("cls", [TrainConfig, PredictConfig])
def test_settings_are_checked_when_made_and_cannot_change_after(cls):
    import dataclasses

    config = cls()
    name = fields(cls)[0].name
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(config, name, -1)
    with pytest.raises(InputError, match=f"^{name} = -1 is not allowed"):
        dataclasses.replace(config, **{name: -1})
    with pytest.raises(InputError, match=f"^{name} = -1 is not allowed"):
        cls(**{name: -1})
    assert config == cls()


@pytest.mark.parametrize("cls", [TrainConfig, PredictConfig])
def test_every_setting_has_its_reason_beside_it(cls):
    """The comment beside each field is its help on the command line."""
    helps = field_help(cls)
    assert [name for name in helps if not helps[name]] == [] and set(helps) == {f.name for f in fields(cls)}


def test_method_options_are_checked_against_their_types():
    with pytest.raises(InputError, match=r"^mean_teacher option ema_decay = 'abc' is not allowed: it takes a number >= 0 and <= 1\.$"):
        method_config("mean_teacher", {"ema_decay": "abc"})
    with pytest.raises(InputError, match="ua_mt option mc_passes = 0 is not allowed"):
        method_config("ua_mt", {"mc_passes": 0})
    assert method_config("mean_teacher", {"ema_decay": 1}).ema_decay == 1.0


def test_the_api_validates_before_building_anything(tiny_volume):
    from napari_sslseg.training import Trainer

    with pytest.raises(InputError, match="batch_labelled = 0"):
        Trainer([tiny_volume], "supervised", TrainConfig(batch_labelled=0))
    with pytest.raises(InputError, match="entropy_min option weight = -1"):
        Trainer([tiny_volume], "entropy_min", TrainConfig(steps=1, patch=32, width=4), {"weight": -1})


def test_prediction_settings_are_validated(tiny_volume):
    from napari_sslseg.inference import SegmentationModel, predict_volume
    from napari_sslseg.networks import build_unet

    model = SegmentationModel(build_unet(2, width=4), 2, ["background", "a"])
    for kw, message in [({"batch_size": 0}, "batch_size = 0"), ({"mc_passes": -4}, "mc_passes = -4")]:
        with pytest.raises(InputError, match=message):
            predict_volume(model, tiny_volume, **kw)
