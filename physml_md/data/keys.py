"""Names of the entries of a structure or batch dictionary (a ``Dict[str, Tensor]``), with shapes and units.

A structure is a batch of one (``cell`` [1, 3, 3], ``pbc`` [1, 3], ``batch`` zeros). N atoms, B structures, E
directed edges (i->j and j->i). Internal units: angstrom, eV, elementary charge, amu, fs.
"""

from typing import Final, Tuple

# inputs
POSITIONS: Final[str] = "positions"  # [N, 3] float, angstrom
ATOMIC_NUMBERS: Final[str] = "atomic_numbers"  # [N] long
CELL: Final[str] = "cell"  # [B, 3, 3] float, angstrom, rows are the lattice vectors (ASE convention)
PBC: Final[str] = "pbc"  # [B, 3] bool
BATCH: Final[str] = "batch"  # [N] long, index of the structure each atom belongs to
N_ATOMS: Final[str] = "n_atoms"  # [B] long
TOTAL_CHARGE: Final[str] = "total_charge"  # [B] float, e

# neighbour list (computed by physml_md.data.neighbors or inside the model)
EDGE_INDEX: Final[str] = "edge_index"  # [2, E] long; row 0 = centre atom i, row 1 = neighbour j
CELL_SHIFTS: Final[str] = "cell_shifts"  # [E, 3] integer-valued; r_ij = x_j - x_i + cell_shifts @ cell

# labels and outputs
ENERGY: Final[str] = "energy"  # [B] float, eV
ENERGIES: Final[str] = "energies"  # [N] float, eV, per-atom contributions (outputs only)
FORCES: Final[str] = "forces"  # [N, 3] float, eV/angstrom
STRESS: Final[str] = "stress"  # [B, 3, 3] float, eV/angstrom^3, ASE sign: (1/V) dE/d(strain)
CHARGES: Final[str] = "charges"  # [N] float, e
DIPOLE: Final[str] = "dipole"  # [B, 3] float, e*angstrom
# committee outputs (physml_md.models.committee): the spread of the members around the mean
ENERGY_STD: Final[str] = "energy_std"  # [B] float, eV: standard deviation of the members' energies
FORCES_STD: Final[str] = "forces_std"  # [N] float, eV/angstrom: rms over members of |F_member - F_mean|

# Labels a dataset may carry. Per-structure labels have B rows, per-atom labels N rows.
PER_STRUCTURE_LABELS: Final = (ENERGY, STRESS, TOTAL_CHARGE, DIPOLE)
PER_ATOM_LABELS: Final = (FORCES, CHARGES)
LABEL_KEYS: Final = PER_STRUCTURE_LABELS + PER_ATOM_LABELS
# the shape of one row (one atom, one structure) of each label
LABEL_SHAPES: Final = {ENERGY: (), STRESS: (3, 3), TOTAL_CHARGE: (), DIPOLE: (3,), FORCES: (3,), CHARGES: ()}

MASK_SUFFIX: Final[str] = "_mask"


def mask_key(label: str) -> str:
    """Key of the [B] bool mask saying which structures carry ``label``.

    A structure without a label has zeros in the label tensor and ``False`` in the mask:
    losses and metrics must use the mask (labels are masked, never faked).
    """
    return label + MASK_SUFFIX


def label_shape(label: str, n_atoms: int) -> Tuple[int, ...]:
    """The shape of ``label`` in the dictionary of one structure of ``n_atoms`` atoms."""
    return (n_atoms if label in PER_ATOM_LABELS else 1, *LABEL_SHAPES[label])
