"""`python -m pulse.engine_run FLOW [options]`: `python -m bytewax.run` as an engine process starts.

`pulse run` replaces itself with this. Before Bytewax builds the flow, the process gets what belongs to
a running engine and not to the dataflow's wiring: Pulse's log format (time and level, like every other
Pulse process; PULSE_LOG_LEVEL sets the level; bytewax.run itself configures no logging), the garbage
collector's tuning (PULSE_GC_GEN0, PULSE_GC_FREEZE) and the Prometheus endpoint (PULSE_METRICS_PORT).
"""

from __future__ import annotations

import os
import runpy

from operators.metrics import serve_engine_metrics
from pulse.config import Settings
from pulse.logs import configure_logging
from pulse.runtime import tune_garbage_collector


def start_engine_process(settings: Settings) -> None:
    """Tune the garbage collector and serve the engine's metrics (what an engine process does at start)."""
    tune_garbage_collector(settings.gc_gen0, bool(settings.gc_freeze))
    serve_engine_metrics(settings.metrics_port)


if __name__ == "__main__":
    configure_logging(os.environ.get("PULSE_LOG_LEVEL", "INFO"))
    start_engine_process(Settings.from_env())
    runpy.run_module("bytewax.run", run_name="__main__", alter_sys=True)
