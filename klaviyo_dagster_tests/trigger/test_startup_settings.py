"""The trigger refuses to start on a malformed setting, naming it, instead of answering 500s."""

from __future__ import annotations

import pytest

from klaviyo_dagster.trigger import TriggerSettings
from klaviyo_dagster.trigger.__main__ import main


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ({"KLAVIYO_SETTLING_DELAY_MINUTES": "-1"}, "KLAVIYO_SETTLING_DELAY_MINUTES must be whole minutes"),
        ({"KLAVIYO_ACCOUNT_ID": "../x"}, "KLAVIYO_ACCOUNT_ID: Account id must be"),
        ({"KLAVIYO_PARTITIONS_START_DATE": "yesterday"}, "KLAVIYO_PARTITIONS_START_DATE must be a date"),
        ({"SUPABASE_URL": "https://x.supabase.co"}, "Supabase is partly configured"),
        ({"TRIGGER_MAX_BODY_BYTES": "inf"}, "TRIGGER_MAX_BODY_BYTES must be a positive number"),
        ({"TRIGGER_MAX_BODY_BYTES": "0.5"}, "TRIGGER_MAX_BODY_BYTES must be a whole number"),
        ({"TRIGGER_MAX_CONNECTIONS": "nan"}, "TRIGGER_MAX_CONNECTIONS must be a positive number"),
    ],
)
def test_a_malformed_setting_is_refused_when_the_service_starts(
    setting: dict[str, str], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        TriggerSettings.from_env(setting)


def test_the_command_prints_one_line_and_exits_2(monkeypatch, capsys) -> None:
    monkeypatch.setenv("TRIGGER_PORT", "abc")
    assert main([]) == 2
    captured = capsys.readouterr()
    assert captured.err == "trigger: TRIGGER_PORT must be a port number 1-65535, got 'abc'\n"
    monkeypatch.delenv("TRIGGER_PORT")
    monkeypatch.setenv("KLAVIYO_SETTLING_DELAY_MINUTES", "-1")
    assert main([]) == 2
    assert capsys.readouterr().err.count("\n") == 1
