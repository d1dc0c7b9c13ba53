import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread():
    """Planning tests use tiny tensors: with 2 OpenMP threads on a busy 2-core machine they
    stall for seconds in thread hand-offs, with 1 they take milliseconds."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
