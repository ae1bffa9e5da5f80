"""Shared test settings: never reach the network; opt-in fixtures."""

import os
import sys

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

# pytest-xdist runs the suite in one worker per core (at most MAX_WORKERS, as each holds its own
# torch and models in memory), whole files at a time (`--dist loadfile`, pyproject), so that
# module fixtures are built once.
MAX_WORKERS = 4


def _cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def pytest_xdist_auto_num_workers(config) -> int:
    return max(1, min(_cores(), MAX_WORKERS))


def pytest_configure(config) -> None:
    """A worker takes its share of the cores in torch threads: at torch's default (all cores)
    each, the workers' threads would outnumber the cores, where OpenMP threads spin-waiting for
    each other make small models far slower (see ``single_thread``)."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "0"))
    if workers > 1:
        import torch

        torch.set_num_threads(max(1, _cores() // workers))


@pytest.fixture(scope="module")
def single_thread():
    """Run a module's tests with one torch thread (restored afterwards).

    On a CPU shared with other jobs, OpenMP threads that spin-wait for each other make small
    models tens of times slower; and the thread count changes the order of float sums, so
    tests comparing runs bitwise (or against 1-thread worker processes) fix it.
    """
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def reward_module(tmp_path, monkeypatch):
    """``write(name, source)``: a module of custom rewards in the working directory (``tmp_path``,
    not on ``sys.path``: ``--import`` must find it there, as ``python -m`` would). Its
    registrations and the imported module are undone afterwards."""
    from rewards import registry

    saved, names = dict(registry._REGISTRY), []
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", ".", str(tmp_path))])

    def write(name: str, source: str) -> None:
        (tmp_path / f"{name}.py").write_text(source)
        names.append(name)

    yield write
    registry._REGISTRY.clear()
    registry._REGISTRY.update(saved)
    for name in names:
        sys.modules.pop(name, None)
