"""Content hashes of tensors and datasets (recorded in the exported file's metadata)."""

import hashlib
from typing import Dict, Iterable, Mapping

import torch
from torch import Tensor


def update_with_tensors(digest: "hashlib._Hash", tensors: Mapping[str, Tensor]) -> None:
    """Feed names, dtypes, shapes and raw bytes of ``tensors`` (in sorted name order) into ``digest``."""
    for name in sorted(tensors):
        tensor = tensors[name].detach().cpu().contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        if tensor.numel():
            digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())


def dataset_sha256(structures: Iterable[Dict[str, Tensor]]) -> str:
    """sha256 of a dataset (a sequence of structure dicts): same structures in the same order, same hash."""
    digest = hashlib.sha256()
    for index, structure in enumerate(structures):
        digest.update(f"structure {index}|".encode())
        update_with_tensors(digest, structure)
    return digest.hexdigest()
