"""The TorchScript-free exported file: a ``torch.export`` program (``.pt2``), optionally AOTInductor-compiled.

What is traced is ``Potential.evaluate`` of ``Potential.for_export`` (inputs as ``prepare`` gives them; forces and
stress by autograd inside the graph). ``ProgramPotential`` runs in Python what stays outside: the input checks
(data-dependent errors), the neighbour list (opaque to the tracer) and the overlap check. Numbers are the eager
model's (float64: tested to 1e-12). ``torch.export.export`` of a module calling ``torch.autograd.grad`` fails with
dynamic shapes (torch 2.9.1: "... is not tracked with proxy"), so ``make_fx`` first traces forward and backward
into aten operations with symbolic sizes (duck shaping off: sizes equal by chance stay apart), and that graph is
exported with dynamic atoms, edges and structures. "aotinductor" compiles it (needs a C++ compiler; runs only on
the device kind and CPU family it was compiled for). Metadata at ``<archive>/extra/<METADATA_FILE>``.
"""

from __future__ import annotations

import sys
import time
import warnings
import zipfile
from pathlib import Path
from typing import Dict, List, Tuple

import torch
import torch._inductor
import torch.fx.experimental._config as fx_config
from torch import Tensor
from torch.export.passes import move_to_device_pass
from torch.fx.experimental.proxy_tensor import make_fx

from physml_md.data import keys as K
from physml_md.export.metadata import METADATA_FILE, check_against_module
from physml_md.models.potential import Potential, PotentialInputs, edge_vectors, raise_on_overlap

PROGRAM_FORMATS = ("export", "aotinductor")
# outputs of every program that hold the atomic numbers and cutoff it was traced with (not shown to callers)
_SPECIES_OUTPUT = "_program_atomic_numbers"
_CUTOFF_OUTPUT = "_program_cutoff"
# evaluate's tensor arguments in order (as Potential.prepare returns them), each with its size that varies
_INPUTS = {
    "positions": "atoms",
    "numbers": "atoms",
    "species": "atoms",
    "cell": "structures",
    "pbc": "structures",
    "batch": "atoms",
    "n_atoms": "structures",
    "edge_index": "edges",
    "cell_shifts": "edges",
    "total_charge": "structures",
}


def _example_inputs(model: Potential, device: torch.device) -> tuple:
    """Two small structures (one isolated, one periodic) of the model's species, every size at least 2."""
    generator = torch.Generator().manual_seed(0)
    n = 8
    numbers = torch.tensor([model.species[i % len(model.species)] for i in range(n)])
    spacing = min(model.cutoff, 3.0) / 2.0
    grid = torch.tensor([[i % 2, (i // 2) % 2, i // 4] for i in range(n // 2)], dtype=torch.float64) * spacing
    jitter = 0.05 * spacing * torch.rand(n, 3, generator=generator, dtype=torch.float64)
    positions = torch.cat([grid, grid]) + jitter
    side = 2.0 * spacing + model.cutoff
    data = {
        K.POSITIONS: positions.to(device),
        K.ATOMIC_NUMBERS: numbers.to(device),
        K.CELL: (torch.eye(3, dtype=torch.float64) * side).repeat(2, 1, 1).to(device),
        K.PBC: torch.tensor([[False] * 3, [True] * 3], device=device),
        K.BATCH: torch.arange(2).repeat_interleave(n // 2).to(device),
    }
    return model.prepare(data)


def trace_program(model: Potential, device: torch.device | str = "cpu") -> torch.export.ExportedProgram:
    """``model.evaluate`` (with stress, without the overlap check) as a program with dynamic sizes."""
    if not isinstance(model, Potential):
        raise TypeError(f"trace_program needs a physml_md.models.Potential, got {type(model).__name__}")
    device = torch.device(device)
    traceable = model.for_export().to(device)
    inputs = _example_inputs(traceable, device)

    def evaluate(*args: Tensor) -> Dict[str, Tensor]:
        with torch.enable_grad():
            outputs = dict(traceable.evaluate(*args, True, False))
        # what the traced model was built for, as constants of the program (checked against the metadata on load)
        outputs[_SPECIES_OUTPUT] = torch.tensor(traceable.species, dtype=torch.long, device=device)
        outputs[_CUTOFF_OUTPUT] = torch.tensor(traceable.cutoff, dtype=torch.float64, device=device)
        return outputs

    with fx_config.patch(use_duck_shape=False):
        graph = make_fx(evaluate, tracing_mode="symbolic", _allow_non_fake_inputs=True)(*inputs)
    dims = {name: torch.export.Dim(name) for name in ("atoms", "edges", "structures")}
    sizes = tuple({1 if name == "edge_index" else 0: dims[size]} for name, size in _INPUTS.items())
    return torch.export.export(graph, inputs, dynamic_shapes=sizes, strict=False)


def save_program(model: Potential, path: Path, document: str, format: str, device: torch.device | str = "cpu"):
    """Trace ``model`` and write it to ``path`` in ``format`` with the metadata ``document`` (JSON text)."""
    if format not in PROGRAM_FORMATS:
        raise ValueError(f"format must be one of {PROGRAM_FORMATS} here, got {format!r}")
    program = trace_program(model, device)
    if format == "export":
        torch.export.save(program, str(path), extra_files={METADATA_FILE: document})
        return
    # the C++ build is silent and long: say what is happening (stderr, as the MD progress bar)
    print(
        "compiling the model with AOTInductor (a C++ build; this takes about a minute)...", file=sys.stderr, flush=True
    )
    start = time.perf_counter()
    try:
        torch._inductor.aoti_compile_and_package(program, package_path=str(path))
    except Exception as exc:  # a compiler error: say what to do instead
        raise RuntimeError(
            f"AOTInductor could not compile the model ({type(exc).__name__}: {str(exc)[:500]}); it needs a working "
            "C++ compiler (g++ or clang): install one, or export with format='export' (the same program, not "
            "compiled)"
        ) from exc
    print(f"compiled in {time.perf_counter() - start:.0f} s", file=sys.stderr, flush=True)
    with zipfile.ZipFile(path) as archive:
        root = archive.namelist()[0].split("/", 1)[0]
    with zipfile.ZipFile(path, "a") as archive:
        archive.writestr(f"{root}/extra/{METADATA_FILE}", document)


class ProgramPotential(PotentialInputs):
    """A loaded program, called like the TorchScript module: ``forward(data) -> outputs``.

    ``prepare`` (checks, species indices, neighbour list) and the overlap check run here, in Python; the
    program computes the rest. Outputs are those of the TorchScript file: no "stress" unless some structure is
    periodic. No gradient mode is needed (the backward pass is part of the program).
    """

    def __init__(self, program, metadata: Dict, device: torch.device):
        super().__init__(list(metadata["atomic_numbers"]), float(metadata["cutoff"]))
        self.to(device=device, dtype=getattr(torch, metadata["dtype"]))
        self.program = program
        self.outputs: List[str] = list(metadata.get("outputs", ()))

    def forward(self, data: Dict[str, Tensor]) -> Dict[str, Tensor]:
        inputs = self.prepare(data)
        positions, _, _, cell, pbc, batch, _, edge_index, cell_shifts, _ = inputs
        raise_on_overlap(
            torch.linalg.vector_norm(edge_vectors(positions, cell, batch, edge_index, cell_shifts), dim=-1), edge_index
        )
        results = dict(self.program(*inputs))
        results.pop(_SPECIES_OUTPUT, None)
        results.pop(_CUTOFF_OUTPUT, None)
        if not bool(pbc.any()):
            results.pop(K.STRESS, None)
        return results

    def traced_species_and_cutoff(self) -> Tuple[List[int], float] | None:
        """The atomic numbers and cutoff the program was traced with (constants of the program, read by running it
        on one atom), or None for a file written before programs carried them."""
        one_atom = {
            K.POSITIONS: torch.zeros(1, 3, dtype=self.shift.dtype, device=self.shift.device),
            K.ATOMIC_NUMBERS: torch.tensor(self.species[:1], device=self.shift.device),
        }
        outputs = dict(self.program(*self.prepare(one_atom)))
        if _SPECIES_OUTPUT not in outputs or _CUTOFF_OUTPUT not in outputs:
            return None
        return [int(z) for z in outputs[_SPECIES_OUTPUT].tolist()], float(outputs[_CUTOFF_OUTPUT])


def load_program(path: Path, metadata: Dict, device: torch.device | str = "cpu") -> ProgramPotential:
    """The program in ``path`` (format from ``metadata``) as a ``ProgramPotential`` on ``device``."""
    device = torch.device(device)
    exported_on = torch.device(metadata.get("device", "cpu"))
    if metadata["format"] == "aotinductor":
        if device.type != exported_on.type:
            raise ValueError(
                f"{path} was compiled by AOTInductor for {exported_on.type} and runs only there, not on "
                f"{device.type}: export it again with format='aotinductor' on {device.type}, or use the 'export' or "
                "'torchscript' format"
            )
        program = torch._inductor.aoti_load_package(str(path))
    else:
        with warnings.catch_warnings():  # torch.export.load reads the weights from a read-only buffer, and says so
            warnings.filterwarnings("ignore", message="The given buffer is not writable")
            exported = torch.export.load(str(path))
        if device.type != exported_on.type:
            exported = move_to_device_pass(exported, device)
        program = exported.module()
    loaded = ProgramPotential(program, metadata, device)
    traced = loaded.traced_species_and_cutoff()
    if traced is not None:
        check_against_module(path, metadata, *traced)
    return loaded
