import pytest
import torch


@pytest.fixture(params=[torch.float32, torch.float64], ids=["float32", "float64"])
def dtype(request):
    """Run a test under both model dtypes (tolerances from tests.helpers, keyed by dtype)."""
    return request.param


@pytest.fixture(autouse=True)
def _default_dtype_unchanged():
    """No code under test may change torch's global default dtype."""
    before = torch.get_default_dtype()
    yield
    assert torch.get_default_dtype() == before, "torch's default dtype was changed"


def pytest_configure(config):
    # Small test systems run several times faster on one thread than on two on this 2-core machine
    # (thread start-up dominates); the suite's time budget depends on it.
    torch.set_num_threads(1)
