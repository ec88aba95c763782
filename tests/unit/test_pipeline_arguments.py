"""Pipeline parameters from the command line reach KFP with the types it insists on."""

from __future__ import annotations

import pytest

from dermaops.errors import ConfigError
from dermaops.pipelines.local import typed_arguments
from dermaops.pipelines.training import build_pipeline


def test_values_take_the_parameter_types() -> None:
    pipeline = build_pipeline("training")
    typed = typed_arguments(
        pipeline, {"min_f1_macro": 0, "n": 120.0, "train_settings": {"lr": 0.01}, "arch": 18}
    )
    assert typed == {"min_f1_macro": 0.0, "n": 120, "train_settings": {"lr": 0.01}, "arch": "18"}
    assert isinstance(typed["min_f1_macro"], float) and isinstance(typed["n"], int)


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"epoch": 3}, "no parameter 'epoch'"),
        ({"n": 1.5}, "n=1.5 is not a Integer"),
        ({"train_settings": "lr=1"}, "is not a Dict"),
    ],
)
def test_wrong_parameters_are_named(arguments: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        typed_arguments(build_pipeline("training"), arguments)
