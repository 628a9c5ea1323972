"""Running services until a signal: the signal handlers are in place while they start."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap

import pytest

SCRIPT = textwrap.dedent(
    """
    import asyncio, sys
    from eventbus.service import serve

    class SlowStart:
        stopped = False
        async def start(self):
            print("starting", flush=True)
            await asyncio.Event().wait()  # say, a worker waiting for Redis
        async def stop(self, grace=None):
            SlowStart.stopped = True
        def request_stop(self, *, force=False):
            pass

    service = SlowStart()
    asyncio.run(serve([service]))
    print("stopped" if SlowStart.stopped else "not stopped", flush=True)
    """
)


@pytest.mark.timeout(30)
def test_a_signal_during_start_stops_gracefully() -> None:
    """A SIGTERM while a worker was starting killed it with the default action (exit
    -15, in-flight handlers abandoned): the handlers were installed after start()."""
    proc = subprocess.Popen([sys.executable, "-c", SCRIPT], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "starting"
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=20)
    assert proc.returncode == 0
    assert out.strip() == "stopped"
