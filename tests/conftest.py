"""Shared test settings: never reach the network; an opt-in one-thread fixture."""

import os

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
