"""The chaos soak, bounded: workers and Redis killed, stopped and restarted while events
flow, then every delivery guarantee checked on what Redis holds (benchmarks/soak.py,
docs/soak.md). About two minutes; left out of the default run (pyproject's addopts),
``pytest -m slow`` runs it, as CI does in a step of its own.

``EVENTBUS_SOAK_DURATION`` (seconds of chaos, default 90) and ``EVENTBUS_SOAK_SEED``
make a longer or a repeated run.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from benchmarks.soak import FAULT_KINDS, SoakConfig, run_soak

DURATION = float(os.environ.get("EVENTBUS_SOAK_DURATION", "90"))
SEED = os.environ.get("EVENTBUS_SOAK_SEED")

# chaos, then up to 90 s of drain, start-up and shutdown
pytestmark = [pytest.mark.slow, pytest.mark.timeout(DURATION + 240)]


async def test_chaos_soak_keeps_every_guarantee(tmp_path: Path) -> None:
    config = SoakConfig(
        duration_s=DURATION, seed=None if SEED is None else int(SEED), log_dir=tmp_path
    )
    result = await run_soak(config)
    print(result.table())
    assert {f.kind for f in result.faults} == set(FAULT_KINDS), result.table()
    assert result.figures["events published"] >= DURATION * config.rate / 2, result.table()
    if result.failed:
        pytest.fail(result.table(), pytrace=False)
