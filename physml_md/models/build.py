"""Building a model by name: the architectures, the cut-off and dtype checks, species to atomic numbers."""

from typing import Dict, Iterable, Union

import torch

from physml_md.data.elements import ATOMIC_NUMBERS as _symbol_to_z
from physml_md.models.painn import PaiNN
from physml_md.models.potential import Potential
from physml_md.models.tensornet import TensorNet

# The longest cut-off (angstrom) a model may have. Short-range potentials use 4-6 angstrom, the longest ~12;
# electrostatics is a separate term (coulomb). More is almost always a unit mistake (nanometres read as angstrom),
# and neighbour lists grow as cutoff^3: 1000 angstrom on a 32-atom cell asks for ~1e10 pairs.
MAX_CUTOFF = 30.0

# build_model's architectures by name; each constructor takes (n_species, cutoff, features=, n_interactions=, n_rbf=,
# n_outputs=) and meets Potential's energy-model contract (species, edge_index, vectors, lengths -> per atom; n_outputs)
_ARCHITECTURES = {"painn": PaiNN, "tensornet": TensorNet}
MODEL_NAMES = tuple(_ARCHITECTURES)
_DTYPES = {"float32": torch.float32, "float64": torch.float64}


def resolve_dtype(dtype: Union[str, torch.dtype]) -> torch.dtype:
    """'float32' / 'float64' (or the torch dtype) -> torch dtype; anything else is an error."""
    if isinstance(dtype, torch.dtype) and dtype in _DTYPES.values():
        return dtype
    if isinstance(dtype, str) and dtype in _DTYPES:
        return _DTYPES[dtype]
    raise ValueError(f"dtype must be 'float32' or 'float64', got {dtype!r}")


def to_atomic_numbers(species: Iterable[Union[int, str]]) -> list:
    """Chemical symbols or atomic numbers -> sorted list of distinct atomic numbers."""
    numbers = []
    for item in species:
        if isinstance(item, str):
            if item not in _symbol_to_z:
                raise ValueError(f"species: {item!r} is not a chemical symbol")
            numbers.append(_symbol_to_z[item])
        else:
            numbers.append(int(item))
    return sorted(set(numbers))


def check_cutoff(cutoff: float, name: str = "cutoff") -> float:
    """``cutoff`` (angstrom) as a float if 0 < cutoff <= MAX_CUTOFF, else a ValueError that says why."""
    value = float(cutoff)
    if not value > 0 or value == float("inf"):
        raise ValueError(f"{name} must be a positive, finite length (angstrom), got {cutoff}")
    if value > MAX_CUTOFF:
        raise ValueError(
            f"{name} = {value:.6g} angstrom is longer than {MAX_CUTOFF:g} angstrom, more than any potential uses "
            "(short-range models use 4-6 angstrom; long-range electrostatics is a separate term): check the unit, "
            "e.g. 5.0 for 5 angstrom"
        )
    return value


def build_model(
    name: str = "painn",
    *,
    species: Iterable[Union[int, str]],
    cutoff: float = 5.0,
    dtype: Union[str, torch.dtype] = "float64",
    features: int = 64,
    n_interactions: int = 3,
    n_rbf: int = 20,
    zbl: bool = False,
    self_energies: Dict[int, float] | None = None,
    scale: Union[float, Dict[int, float]] = 1.0,
    seed: int = 0,
    charges: bool = False,
    coulomb: bool = False,
) -> Potential:
    """Build a potential ready to train or export.

    name: the architecture, one of ``MODEL_NAMES`` ('painn', 'tensornet'); species: elements the model knows
    (symbols or atomic numbers); cutoff in angstrom; dtype 'float32' or 'float64' for parameters and
    computation (torch's global default dtype is never changed); self_energies: per-element shift in eV (e.g.
    from ``physml_md.data.fit_self_energies``); scale: per-element (or one) factor on the network output.
    ``seed`` fixes the initial weights without touching the global random state. ``charges`` adds a per-atom
    charge head (outputs charges, total_charge, dipole); ``coulomb`` adds PhysNet's damped Coulomb energy
    between those charges (needs ``charges``).
    """
    if name not in MODEL_NAMES:
        raise ValueError(f"unknown model {name!r}; available: {', '.join(MODEL_NAMES)}")
    numbers = to_atomic_numbers(species)
    torch_dtype = resolve_dtype(dtype)
    check_cutoff(cutoff)
    hyperparameters = {
        "name": name,
        "species": numbers,
        "cutoff": float(cutoff),
        "dtype": str(torch_dtype).removeprefix("torch."),
        "features": features,
        "n_interactions": n_interactions,
        "n_rbf": n_rbf,
        "zbl": zbl,
        "seed": seed,
        "charges": bool(charges),
        "coulomb": bool(coulomb),
    }
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        energy_model = _ARCHITECTURES[name](
            len(numbers),
            cutoff,
            features=features,
            n_interactions=n_interactions,
            n_rbf=n_rbf,
            n_outputs=2 if charges else 1,
        )
    model = Potential(
        energy_model,
        numbers,
        cutoff,
        dtype=torch_dtype,
        zbl=zbl,
        hyperparameters=hyperparameters,
        charges=charges,
        coulomb=coulomb,
    )
    model.set_shift_and_scale(self_energies or {}, scale)
    return model
