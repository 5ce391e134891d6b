"""``make demo`` prints the simulated store's flows, campaigns and audience."""

from __future__ import annotations

import io

from klaviyo_dagster.demo import run_demo
from klaviyo_dagster.sim import SimConfig


def test_the_demo_lists_the_simulated_store(monkeypatch) -> None:
    monkeypatch.delenv("KLAVIYO_ENABLE", raising=False)  # the demo needs no setup at all
    out = io.StringIO()

    counts = run_demo(out, profiles=300)

    text = out.getvalue()
    assert counts["profiles"] == 300
    assert counts["flows"] == SimConfig().flows
    assert counts["campaigns"] > 0
    assert f"Flows: {counts['flows']}" in text
    assert f"Email campaigns: {counts['campaigns']}" in text
    assert "Profiles: 300" in text
    assert "429s=0" in text
