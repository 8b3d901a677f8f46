"""Shared test fixtures."""
import pytest
import torch


@pytest.fixture
def one_thread():
    """The networks are tiny; one torch thread is several times faster on 2 cores."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
