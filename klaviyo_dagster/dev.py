"""``make dev``: the Dagster UI on the embedded defaults.

With no Klaviyo settings in the environment the UI talks to a local Klaviyo simulator started here,
so a newcomer can click "Materialize" without credentials. Set ``KLAVIYO_BASE_URL`` (and a key) to
point it at a real account instead.
"""

from __future__ import annotations

import os
import subprocess  # runs our own fixed command  # nosec B404
import sys
from contextlib import ExitStack
from pathlib import Path

from klaviyo_dagster.accounts import DEMO_ACCOUNT_ID
from klaviyo_dagster.demo import DEMO_PROFILES, DEMO_SEED, embedded_defaults
from klaviyo_dagster.sim import SimConfig, SimulatorServer

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def run_dev(port: int = 3000) -> int:
    env = dict(os.environ)
    env.setdefault("DAGSTER_HOME", str(PROJECT_ROOT / ".dagster_home"))
    Path(env["DAGSTER_HOME"]).mkdir(parents=True, exist_ok=True)
    with ExitStack() as stack:
        if not env.get("KLAVIYO_BASE_URL"):
            sim = stack.enter_context(SimulatorServer(SimConfig(profiles=DEMO_PROFILES, seed=DEMO_SEED)))
            env.pop("KLAVIYO_API_KEY_PRIVATE", None)
            env.update(embedded_defaults(sim.base_url))
            print(f"Klaviyo simulator at {sim.base_url}, demo account {DEMO_ACCOUNT_ID}")
            print("(set KLAVIYO_BASE_URL, KLAVIYO_ACCOUNT_ID and a key to use a real account)")
        command = [sys.executable, "-m", "dagster", "dev", "-w", "workspace.yaml", "-p", str(port)]
        try:
            return subprocess.call(command, cwd=PROJECT_ROOT, env=env)  # noqa: S603 - our own command  # our own fixed command, no shell  # nosec B603
        except KeyboardInterrupt:
            return 0
