"""``make demo`` runs the ingest job on the simulator and prints what it produced."""

from __future__ import annotations

import io
import os

import dagster as dg

from klaviyo_dagster.demo import run_demo
from klaviyo_dagster.storage.store import local_store


def test_the_demo_ingests_the_simulated_store_end_to_end(tmp_path, monkeypatch) -> None:
    """Twice: the second run reuses the same upload folder and snapshot row."""
    monkeypatch.delenv("KLAVIYO_ENABLE", raising=False)  # the demo needs no setup at all
    monkeypatch.setenv("KLAVIYO_DAGSTER_DATA_DIR", str(tmp_path))
    out = io.StringIO()

    with dg.DagsterInstance.ephemeral() as instance:
        rows = run_demo(out, profiles=300, instance=instance)
        first = out.getvalue()
        run_demo(io.StringIO(), profiles=300, instance=instance)

    text = first
    assert set(rows) == {"flows_csv", "campaigns_csv", "subscribers_csv"}
    assert rows["flows_csv"] > 0 and rows["campaigns_csv"] >= 0
    assert 0 < rows["subscribers_csv"] <= 300
    files = sorted(p.name for p in tmp_path.rglob("*.csv"))
    assert files == ["campaigns.csv", "flows.csv", "subscribers.csv"]
    assert ": success" in text
    assert "snapshot " in text and "totals: totalRevenue" in text
    assert "0 429s" in text and " 1 429s" not in text
    assert len({p.parent for p in tmp_path.rglob("*.csv")}) == 1  # one upload folder after two runs
    tables = local_store(tmp_path, "preauth-uploads").tables
    (upload_id,) = {p.parent.name for p in tmp_path.rglob("*.csv")}
    assert tables.count_snapshots(upload_id) == 1
    assert "KLAVIYO_ENABLE" not in os.environ  # the demo put the environment back
