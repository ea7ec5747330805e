"""physml-md's own TorchScript calls (script, save, load), without PyTorch's deprecation warnings.

PyTorch 2.10+ warns (FutureWarning) on every ``torch.jit.script``/``save``/``load``; the ``.pt`` file and
openmm-torch's TorchForce are TorchScript by design, so exactly these "is deprecated" warnings are silenced around
our own calls (a user's ``torch.jit`` calls and the "not supported in Python 3.14+" warning still show).
``model_errors()`` turns a scripted module's ``torch.jit.Error`` back into the plain exception it raised.
"""

from __future__ import annotations

import contextlib
import re
import warnings
from typing import Dict, Iterator

import torch

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


# the last line of a torch.jit.Error's message: "builtins.ValueError: <the sentence>" (torch 2.9 to 2.14 alike)
_SCRIPTED_ERROR = re.compile(r"^builtins\.(ValueError|RuntimeError): (.*)", re.MULTILINE | re.DOTALL)


def plain_error(error: Exception) -> Exception | None:
    """The ValueError (or RuntimeError) that a TorchScript module raised, as Python raises it: the sentence of a
    ``torch.jit.Error`` without its TorchScript trace; None when ``error`` carries no such exception."""
    match = _SCRIPTED_ERROR.search(str(error))
    if match is None:
        return None
    return {"ValueError": ValueError, "RuntimeError": RuntimeError}[match.group(1)](match.group(2).strip())


@contextlib.contextmanager
def model_errors() -> Iterator[None]:
    """Inside: an error raised by a TorchScript module surfaces as the plain ValueError (RuntimeError) it raised,
    as a torch.export program's does. Wrap every call of a loaded module in it."""
    try:
        yield
    except torch.jit.Error as exc:
        plain = plain_error(exc)
        if plain is None:
            raise
        raise plain from None
