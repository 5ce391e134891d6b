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

    second = io.StringIO()
    with dg.DagsterInstance.ephemeral() as instance:
        rows = run_demo(out, profiles=300, instance=instance)
        first = out.getvalue()
        run_demo(second, profiles=300, instance=instance)

    text = first
    assert "Reused upload" not in first
    assert "Reused upload" in second.getvalue() and "replaced, not added" in second.getvalue()
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


def test_the_demo_ignores_supabase_settings_in_the_shell_and_prints_no_debug_lines(
    tmp_path, monkeypatch, capfd
) -> None:
    """A dashboard developer's exported production settings must not turn the demo against them."""
    monkeypatch.setenv("KLAVIYO_DAGSTER_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("SUPABASE_URL", "https://production.supabase.test")
    monkeypatch.setenv("SUPABASE_SERVICE_ROLE_KEY", "sb-production-key")
    monkeypatch.setenv("SUPABASE_DB_URL", "postgresql://nobody@127.0.0.1:1/production")
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")  # a corporate proxy: not for the simulator
    out = io.StringIO()

    with dg.DagsterInstance.ephemeral() as instance:
        rows = run_demo(out, profiles=50, instance=instance)

    assert set(rows) == {"flows_csv", "campaigns_csv", "subscribers_csv"}
    store_line = next(line for line in out.getvalue().splitlines() if line.startswith("Store: "))
    assert store_line.startswith("Store: objects file://") and store_line.endswith("tables sqlite")
    assert len(list(tmp_path.rglob("*.csv"))) == 3
    assert os.environ["SUPABASE_URL"] == "https://production.supabase.test"  # put back afterwards
    captured = capfd.readouterr()
    assert " - DEBUG - " not in captured.out + captured.err


def test_a_failing_demo_says_what_failed_in_a_line_and_exits_non_zero(tmp_path, monkeypatch, capsys) -> None:
    from klaviyo_dagster.__main__ import main

    monkeypatch.setenv("KLAVIYO_DAGSTER_DATA_DIR", str(tmp_path / "not-a-folder"))
    (tmp_path / "not-a-folder").write_text("a file where the data folder should be")
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "home"))
    (tmp_path / "home").mkdir()

    assert main(["demo", "--profiles", "20"]) == 1

    captured = capsys.readouterr()
    assert "FAILED" in captured.out and "Traceback" not in captured.out + captured.err
