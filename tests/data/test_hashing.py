import torch

from physml_md.data.hashing import dataset_sha256


def structure(shift=0.0):
    return {
        "positions": torch.tensor([[0.0, 0.0, 0.0], [0.0, 0.0, 1.1 + shift]], dtype=torch.float64),
        "atomic_numbers": torch.tensor([6, 8]),
        "energy": torch.tensor([-1.5], dtype=torch.float64),
    }


def test_dataset_hash_follows_content_and_order():
    a, b = structure(), structure(1e-12)
    assert dataset_sha256([a, b]) == dataset_sha256([structure(), structure(1e-12)])
    assert dataset_sha256([a, b]) != dataset_sha256([b, a])
    assert dataset_sha256([a]) != dataset_sha256([b])
    as_float32 = {k: (v.float() if v.is_floating_point() else v) for k, v in a.items()}
    assert dataset_sha256([a]) != dataset_sha256([as_float32])
