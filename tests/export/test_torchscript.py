"""physml_md/export/torchscript.py: our TorchScript calls are silent; a user's own torch.jit calls still warn."""

import warnings

import pytest
import torch

from physml_md.export import export_potential, load_potential
from physml_md.models import build_model

TORCH_WARNS = tuple(int(part) for part in torch.__version__.split(".")[:2]) >= (2, 10)


def test_export_and_load_show_no_warning_and_leave_the_filters_alone(tmp_path):
    model = build_model(species=["H", "C", "O"], cutoff=4.0, features=8, n_interactions=1, seed=1)
    filters = list(warnings.filters)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")  # overrides the suite's own ignore of these warnings
        path = export_potential(model, tmp_path / "model.pt")
        load_potential(path)
        assert [str(w.message) for w in caught] == []
        if TORCH_WARNS:  # the user's own call, outside ours, is not silenced
            torch.jit.load(str(path))
            assert any("`torch.jit.load` is deprecated" in str(w.message) for w in caught)
    assert warnings.filters == filters


@pytest.mark.skipif(not TORCH_WARNS, reason=f"torch {torch.__version__} does not deprecate TorchScript yet")
def test_only_the_deprecation_notice_is_silenced():
    from physml_md.export import torchscript

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with torchscript.quiet():
            torch.jit.script(torch.nn.Linear(2, 2))
            warnings.warn("`torch.jit.script` is not supported in Python 3.14+ and may break.", FutureWarning, 1)
    assert [str(w.message) for w in caught] == ["`torch.jit.script` is not supported in Python 3.14+ and may break."]
