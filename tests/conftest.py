"""Shared test settings: never reach the network; opt-in fixtures."""

import os
import sys

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")


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
