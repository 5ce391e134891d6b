"""``make dev``: the Dagster UI on the embedded defaults.

With no Klaviyo settings in the environment the UI talks to a local Klaviyo simulator started here,
so a newcomer can click "Materialize" without credentials. Set ``KLAVIYO_BASE_URL`` (and a key) to
point it at a real account instead.
"""

from __future__ import annotations

import os
import subprocess
import sys
from contextlib import ExitStack
from pathlib import Path

from klaviyo_dagster.sim import DEFAULT_API_KEY, SimConfig, SimulatorServer

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def run_dev(port: int = 3000) -> int:
    env = dict(os.environ)
    env.setdefault("DAGSTER_HOME", str(PROJECT_ROOT / ".dagster_home"))
    Path(env["DAGSTER_HOME"]).mkdir(parents=True, exist_ok=True)
    with ExitStack() as stack:
        if not env.get("KLAVIYO_BASE_URL"):
            sim = stack.enter_context(SimulatorServer(SimConfig(profiles=2_000, seed=42)))
            env.update(KLAVIYO_BASE_URL=sim.base_url, KLAVIYO_API_KEY=DEFAULT_API_KEY, KLAVIYO_ENABLE="true")
            print(f"Klaviyo simulator at {sim.base_url} (set KLAVIYO_BASE_URL to use a real account)")
        command = [sys.executable, "-m", "dagster", "dev", "-w", "workspace.yaml", "-p", str(port)]
        try:
            return subprocess.call(command, cwd=PROJECT_ROOT, env=env)  # noqa: S603 - our own command
        except KeyboardInterrupt:
            return 0
