"""Everything with effects: CLI, settings, connections, Prefect flows, extract, load, files.

Prefect runs offline and quietly by default: no telemetry, and a project-local PREFECT_HOME
(both only where the environment does not say otherwise).
"""

import os
from pathlib import Path

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_HOME", str(Path.cwd() / ".prefect"))
