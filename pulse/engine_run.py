"""`python -m pulse.engine_run FLOW [options]`: `python -m bytewax.run` with Pulse's log format.

`pulse run` replaces itself with this, so the engine's log lines carry a time and a level like those of
every other Pulse process (bytewax.run itself configures no logging). PULSE_LOG_LEVEL sets the level.
"""

from __future__ import annotations

import os
import runpy

from pulse.logs import configure_logging

if __name__ == "__main__":
    configure_logging(os.environ.get("PULSE_LOG_LEVEL", "INFO"))
    runpy.run_module("bytewax.run", run_name="__main__", alter_sys=True)
