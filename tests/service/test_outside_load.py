"""`service.outside_load`: cores other processes keep busy, read from the real ``/proc/stat``
(a real busy process beside), and the arithmetic on given counters."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from service.outside_load import SOLO_MAX_OUTSIDE_CORES, OutsideLoad, machine_busy_seconds


def test_outside_load_is_the_machine_busy_time_less_this_process() -> None:
    clock = iter([0.0, 0.5, 1.0, 2.0, 20.0, 21.0])
    # read at 0, 1, 2, 20, 21 s (not at 0.5 s: too soon, the files are not read)
    busy = iter([100.0, 100.6, 102.2, 200.0, 200.1])  # machine: 0.6 core-s in the first second...
    own = iter([10.0, 10.4, 11.0, 50.0, 50.05])  # ... of which 0.4 this process's
    load = OutsideLoad(every_s=1.0, busy=lambda: next(busy), own=lambda: next(own), clock=lambda: next(clock))
    assert load.cores is None
    assert load.sample() is None and not load.cores  # 0.5 s: too soon for a reading
    assert load.sample() == pytest.approx(0.2)  # 1.0 s: (0.6 - 0.4) / 1
    assert load.sample() == pytest.approx(1.0)  # 2.0 s: (1.6 - 0.6) / 1: another process on one core
    assert load.sample() is None  # 18 s later: too old a baseline, measured again first
    assert load.allows_solo() and load.cores == pytest.approx(0.05)  # 1 s on: (0.1 - 0.05) / 1


def test_no_proc_stat_means_no_solo(tmp_path: Path) -> None:
    assert machine_busy_seconds(tmp_path / "missing") is None
    load = OutsideLoad(busy=lambda: None)
    assert load.sample() is None and not load.allows_solo()


@pytest.mark.skipif(not Path("/proc/stat").is_file(), reason="Linux /proc")
def test_a_busy_process_beside_is_seen() -> None:
    """A real process spinning on one core reads as outside load (this process idles)."""
    spin = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        load = OutsideLoad(every_s=0.5)
        deadline = time.monotonic() + 60
        seen: list[float] = []
        while time.monotonic() < deadline and not (seen and seen[-1] >= SOLO_MAX_OUTSIDE_CORES):
            time.sleep(0.1)
            if (cores := load.sample()) is not None and (not seen or cores != seen[-1]):
                seen.append(cores)
        assert seen and seen[-1] >= SOLO_MAX_OUTSIDE_CORES and not load.allows_solo()
    finally:
        spin.kill()
        spin.wait()
