"""physml-md's own TorchScript calls (script, save, load), without PyTorch's deprecation warnings.

PyTorch 2.10 and later deprecate TorchScript and warn (FutureWarning, shown to users by default) on every
``torch.jit.script``, ``torch.jit.save`` and ``torch.jit.load``. The exported ``.pt`` file and openmm-torch's
TorchForce are TorchScript by design and keep working under those versions, so physml-md silences exactly
these "is deprecated" warnings around its own calls, and nothing else: a user's own ``torch.jit`` calls still
warn, and so does PyTorch's "not supported in Python 3.14+" (a real risk, not a notice).
"""

from __future__ import annotations

import contextlib
import warnings
from typing import Dict, Iterator

import torch

__all__ = ["load", "quiet", "save", "script"]

_DEPRECATED = r"`torch\.jit\.(script|save|load)` is deprecated"


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Inside: PyTorch's TorchScript deprecation warnings are not shown (other warnings are)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=_DEPRECATED, category=FutureWarning)
        yield


def script(module: torch.nn.Module) -> torch.jit.ScriptModule:
    """``torch.jit.script(module)``."""
    with quiet():
        return torch.jit.script(module)


def save(module: torch.jit.ScriptModule, path: str, extra_files: Dict[str, str] | None = None) -> None:
    """``torch.jit.save(module, path, _extra_files=extra_files)``."""
    with quiet():
        torch.jit.save(module, path, _extra_files=extra_files or {})


def load(path: str, map_location: torch.device | None = None) -> torch.jit.ScriptModule:
    """``torch.jit.load(path, map_location=map_location)``."""
    with quiet():
        return torch.jit.load(path, map_location=map_location)
