"""physml_md/threads.py: torch's thread count inside a block, put back after it (even after an error)."""

import pytest
import torch

from physml_md.threads import torch_threads


def test_sets_the_count_inside_the_block_and_puts_it_back():
    before = torch.get_num_threads()
    with torch_threads(before + 1):
        assert torch.get_num_threads() == before + 1
    assert torch.get_num_threads() == before
    with pytest.raises(RuntimeError, match="inside"):
        with torch_threads(before + 1):
            raise RuntimeError("inside")
    assert torch.get_num_threads() == before


def test_none_leaves_the_count_alone():
    before = torch.get_num_threads()
    with torch_threads(None):
        assert torch.get_num_threads() == before
    assert torch.get_num_threads() == before
