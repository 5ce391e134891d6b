"""KLAVIYO_TIME_SCALE: the simulator's time scale for the resource the code location binds."""

from __future__ import annotations

import pytest

from klaviyo_dagster.defs.resources import klaviyo_resource_from_env
from klaviyo_dagster.environment import KLAVIYO_TIME_SCALE_VAR as TIME_SCALE_ENV_VAR


def test_unset_is_real_time(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(TIME_SCALE_ENV_VAR, raising=False)
    assert klaviyo_resource_from_env().time_scale == 1.0


def test_blank_is_real_time(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(TIME_SCALE_ENV_VAR, "  ")
    assert klaviyo_resource_from_env().time_scale == 1.0


@pytest.mark.parametrize(("raw", "expected"), [("0.05", 0.05), (" 2 ", 2.0), ("1e-3", 0.001)])
def test_positive_number_is_passed_on(monkeypatch: pytest.MonkeyPatch, raw: str, expected: float) -> None:
    monkeypatch.setenv(TIME_SCALE_ENV_VAR, raw)
    assert klaviyo_resource_from_env().time_scale == pytest.approx(expected)


@pytest.mark.parametrize("raw", ["0", "-1", "fast", "nan", "inf", "0,5"])
def test_bad_value_names_the_variable(monkeypatch: pytest.MonkeyPatch, raw: str) -> None:
    monkeypatch.setenv(TIME_SCALE_ENV_VAR, raw)
    with pytest.raises(ValueError, match=TIME_SCALE_ENV_VAR) as error:
        klaviyo_resource_from_env()
    assert repr(raw) in str(error.value)
