"""Shared fixtures: small datasets in the real on-disk formats, and no network, ever."""

from __future__ import annotations

import os
import socket
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("MPLBACKEND", "Agg")  # no windows from the tests
if os.environ.get("PYTEST_XDIST_WORKER"):  # `pytest -n auto`: one worker per core, so one thread per worker
    os.environ.setdefault("OMP_NUM_THREADS", "1")  # (and per process it starts): two threads per worker on
    torch.set_num_threads(1)  # shared cores wait for each other and run 5-10x slower

import stand_in_data  # noqa: E402  (tests/stand_in_data.py)


class NetworkBlocked(OSError):
    pass


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """Any attempt to open a connection fails at once, as it does on a machine without internet."""

    real_connect = socket.socket.connect

    def refuse(*args, **kwargs):
        raise NetworkBlocked("network disabled in tests")

    def connect(sock, address):
        if sock.family == getattr(socket, "AF_UNIX", None):  # local sockets (DataLoader workers) are not network
            return real_connect(sock, address)
        raise NetworkBlocked("network disabled in tests")

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)


@pytest.fixture
def one_thread():
    """One torch thread for tests of tiny tensors: a second thread gains nothing there, and on a
    CPU shared with other jobs the two can stall waiting for each other."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def mnist_root(tmp_path_factory) -> Path:
    """A data folder with a small learnable MNIST (2,000 train / 500 test) as plain IDX files.

    Shared by many tests: treat it as read-only (copy it before damaging anything).
    """
    root = tmp_path_factory.mktemp("mnist-data")
    stand_in_data.write_mnist(root, "MNIST", train_size=2000, test_size=500)
    return root

