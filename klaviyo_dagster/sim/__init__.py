"""A Klaviyo API simulator: a real HTTP server with spec-faithful shapes, filters, pagination,
rate limits, reports, revision checks and fault injection over deterministic synthetic accounts.

    with SimulatorServer(SimConfig(profiles=1000, seed=7)) as sim:
        httpx.get(f"{sim.base_url}/api/flows", headers={...})
"""

from klaviyo_dagster.sim.config import DEFAULT_API_KEY, RecordedRequest, SimConfig
from klaviyo_dagster.sim.faults import FaultSpec
from klaviyo_dagster.sim.server import SimulatorServer

__all__ = ["DEFAULT_API_KEY", "FaultSpec", "RecordedRequest", "SimConfig", "SimulatorServer"]
