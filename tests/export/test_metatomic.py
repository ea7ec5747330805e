"""physml_md/export/metatomic.py: the metatomic file against PhysMLCalculator, and a LAMMPS-like domain decomposition.

Everything here runs without LAMMPS: metatomic-ase is the engine of the agreement tests, and the domain
decomposition is done by hand the way LAMMPS does it (a rank's own atoms plus every periodic image within the
declared interaction_range, evaluated as an isolated cluster, energies asked for its own atoms only, forces on
images sent back to their atoms). That test is what proves ``interaction_range``.
"""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import bulk, molecule

pytest.importorskip("metatomic.torch", reason="metatomic-torch is not installed: pip install 'physml-md[metatomic]'")
pytest.importorskip("metatomic_ase", reason="metatomic-ase is not installed: pip install 'physml-md[metatomic]'")

from metatomic.torch import ModelOutput, load_atomistic_model  # noqa: E402
from metatomic_ase import MetatomicCalculator  # noqa: E402

from physml_md.cli.main import main  # noqa: E402
from physml_md.export import ExportFormatError, export_potential, read_metadata  # noqa: E402
from physml_md.export.metatomic import (  # noqa: E402
    MetatomicEvaluator,
    interaction_range,
    metatomic_model,
    potential_from_export,
    read_metatomic_metadata,
)
from physml_md.integrations.ase import PhysMLCalculator  # noqa: E402
from physml_md.models import build_model  # noqa: E402
from physml_md.models.committee import Committee  # noqa: E402
from tests.helpers import export_model, inputs, requires_cuda, triclinic_cu3oh  # noqa: E402

ARCHITECTURES = ("painn", "tensornet")
EXACT = 1e-10  # eV, eV/angstrom, eV/angstrom^3: float64, the same maths in another engine


@pytest.fixture(autouse=True)
def _unoptimised_torchscript():
    """TorchScript's profiling executor spends its first calls on each new input optimising the graph (up to 17 s
    for a committee file on this 2-core machine); the numbers are the same without, as in export_agreement."""
    with torch.jit.optimized_execution(False):
        yield


def structures():
    """A molecule, a triclinic periodic cell and a periodic cell smaller than the 4.5 angstrom cutoff."""
    ethanol = molecule("CH3CH2OH")
    ethanol.rattle(0.05, seed=1)
    triclinic = triclinic_cu3oh()
    small = bulk("Cu", "fcc", a=3.61) * (1, 1, 2)  # cell vectors 2.55 angstrom: atoms see their own images
    small.rattle(0.03, seed=2)
    return {"molecule": ethanol, "triclinic": triclinic, "small cell": small}


def committee_model(arch):
    return Committee([export_model(arch, seed) for seed in (0, 1, 2)]).eval()


@pytest.fixture(scope="module", params=ARCHITECTURES)
def exported(request, tmp_path_factory):
    """(model, metatomic file) of each architecture, float64."""
    model = export_model(request.param)
    path = tmp_path_factory.mktemp(request.param) / "model.pt"
    export_potential(model, path, format="metatomic")
    return model, path


def calculated(atoms, calculator, properties):
    atoms = atoms.copy()
    atoms.calc = calculator
    return {name: np.asarray(atoms.calc.get_property(name, atoms), dtype=np.float64) for name in properties}


def assert_exact(actual, expected, what):
    error = float(np.abs(np.asarray(actual) - np.asarray(expected)).max())
    assert error <= EXACT, f"{what}: metatomic differs from physml-md by {error:.2e} (> {EXACT:g})"


@pytest.mark.parametrize("name", list(structures()))
def test_metatomic_ase_matches_physml_calculator(exported, name):
    model, path = exported
    atoms = structures()[name]
    properties = ["energy", "energies", "forces"] + (["stress"] if atoms.pbc.all() else [])
    reference = calculated(atoms, PhysMLCalculator(model), properties)
    found = calculated(atoms, MetatomicCalculator(path, check_consistency=True), properties)
    for key in properties:
        assert_exact(found[key], reference[key], f"{name} {key}")
    assert np.abs(reference["forces"]).max() > 1e-3  # not zero by symmetry: the comparison could fail


@requires_cuda
def test_the_file_runs_on_the_gpu_as_on_the_cpu(exported):
    """metatomic-ase moves the file to CUDA (as LAMMPS' `device cuda` does): the same numbers as on the CPU."""
    model, path = exported
    atoms = structures()["triclinic"]
    properties = ["energy", "forces"]
    on_cpu = calculated(atoms, MetatomicCalculator(path, device="cpu"), properties)
    on_gpu = calculated(atoms, MetatomicCalculator(path, device="cuda"), properties)
    for key in properties:
        error = float(np.abs(on_gpu[key] - on_cpu[key]).max())
        assert error <= 1e-9, f"{key}: cuda differs from cpu by {error:.2e}"


def test_the_file_declares_what_lammps_needs(exported):
    model, path = exported
    loaded = load_atomistic_model(str(path))
    capabilities = loaded.capabilities()
    assert capabilities.interaction_range == interaction_range(model)
    assert capabilities.length_unit == "angstrom"
    assert capabilities.dtype == "float64"
    assert list(capabilities.atomic_types) == [1, 6, 8, 29]
    assert capabilities.outputs["energy"].unit == "eV"
    assert capabilities.outputs["energy"].sample_kind == "atom"
    assert "energy_uncertainty" not in capabilities.outputs  # one model: no committee spread
    options = loaded.requested_neighbor_lists()
    assert [(o.cutoff, o.full_list) for o in options] == [(4.5, True)]
    document = read_metatomic_metadata(path)
    assert document["format"] == "metatomic"
    assert document["species"] == ["H", "C", "O", "Cu"] and document["cutoff"] == 4.5
    assert document["interaction_range"] == capabilities.interaction_range
    assert max(document["agreement"]["differences"]["file vs eager"].values()) <= EXACT
    with pytest.raises(ExportFormatError, match="metatomic model"):
        read_metadata(path)  # physml-md's own engines say what the file is, not "damaged"


def test_interaction_range_is_hops_times_cutoff():
    painn = build_model("painn", species=["Cu"], cutoff=3.0, features=8, n_interactions=3)
    tensornet = build_model("tensornet", species=["Cu"], cutoff=3.0, features=8, n_interactions=2)
    assert interaction_range(painn) == 9.0  # one hop per interaction
    assert interaction_range(tensornet) == 9.0  # the embedding is a hop of its own


def test_an_energy_model_of_unknown_reach_is_refused():
    model = build_model("painn", species=["Cu"], cutoff=3.0, features=8, n_interactions=1)
    model.energy_model = torch.nn.Identity()  # stands for an energy model of one's own
    with pytest.raises(ValueError, match="give it an int attribute message_hops"):
        interaction_range(model)
    model.energy_model.message_hops = 2
    assert interaction_range(model) == 6.0


def test_a_committee_export_is_rebuilt_with_its_weights(tmp_path):
    committee = committee_model("painn")
    source = export_potential(committee, tmp_path / "committee.pt")  # TorchScript
    rebuilt, carried = potential_from_export(source)
    assert isinstance(rebuilt, Committee) and rebuilt.n_members == 3
    expected = committee.state_dict()
    assert rebuilt.state_dict().keys() == expected.keys()
    assert all(torch.equal(rebuilt.state_dict()[key], value) for key, value in expected.items())
    assert carried["exported_from"] == str(source)


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_committee_exports_its_mean_and_uncertainty(arch, tmp_path):
    committee = committee_model(arch)
    path = export_potential(committee, tmp_path / "committee.pt", format="metatomic")
    calculator = MetatomicCalculator(path, check_consistency=True, uncertainty_threshold=None)
    ours = PhysMLCalculator(committee)
    member_calculators = [PhysMLCalculator(member) for member in committee.members]
    for name, atoms in structures().items():
        properties = ["energy", "energies", "forces"] + (["stress"] if atoms.pbc.all() else [])
        reference = calculated(atoms, ours, properties + ["energy_std"])
        found = calculated(atoms, calculator, properties)
        for key in properties:
            assert_exact(found[key], reference[key], f"committee, {name}, {key}")
        per_system = calculator.run_model(atoms, {"energy_uncertainty": ModelOutput(unit="eV", sample_kind="system")})
        assert_exact(per_system["energy_uncertainty"].block().values.detach(), reference["energy_std"], "energy_std")
        assert reference["energy_std"] > 1e-3  # the members differ: the comparison could fail
        # per atom: the members' spread of each atom's energy, from each member on its own
        members = np.stack([calculated(atoms, member, ["energies"])["energies"] for member in member_calculators])
        per_atom = calculator.run_model(atoms, {"energy_uncertainty": ModelOutput(unit="eV", sample_kind="atom")})
        assert_exact(per_atom["energy_uncertainty"].block().values.detach().reshape(-1), members.std(0), "per atom")


def test_a_model_whose_charges_share_one_total_charge_is_refused(tmp_path):
    model = build_model(
        "painn", species=["H", "O"], cutoff=4.0, features=8, n_interactions=1, charges=True, coulomb=True
    )
    with pytest.raises(ValueError, match="cannot be split over LAMMPS' domains"):
        export_potential(model, tmp_path / "model.pt", format="metatomic")
    assert not (tmp_path / "model.pt").exists()


def test_float32_model_exports_a_float32_file(tmp_path):
    model = build_model("painn", species=["Cu"], cutoff=3.0, features=8, n_interactions=1, dtype="float32").eval()
    path = export_potential(model, tmp_path / "model.pt", format="metatomic")
    assert load_atomistic_model(str(path)).capabilities().dtype == "float32"
    assert read_metatomic_metadata(path)["dtype"] == "float32"


def test_cli_converts_an_exported_file(exported, tmp_path, capsys):
    model, _ = exported
    source = export_potential(model, tmp_path / "model.pt")  # TorchScript
    target = tmp_path / "lammps.pt"
    assert main(["export", str(source), str(target), "--format", "metatomic"]) == 0
    atoms = structures()["triclinic"]
    reference = calculated(atoms, PhysMLCalculator(model), ["energy", "forces", "stress"])
    found = calculated(atoms, MetatomicCalculator(target), ["energy", "forces", "stress"])
    for key in reference:
        assert_exact(found[key], reference[key], f"converted file, {key}")
    assert read_metatomic_metadata(target)["exported_from"] == str(source)


# ---- domain decomposition as LAMMPS does it -------------------------------------------------------------------------

SKIN = 0.5  # angstrom: LAMMPS' ghost cutoff is interaction_range + the neighbour skin


def decomposition_model(arch, n_interactions):
    """Cu, 4 angstrom: the cutoff takes in the second neighbour shell (3.61 angstrom, along the cell axes), so that a
    hop advances up to a cutoff's length along x. Scale 10: forces of a few 0.01 eV/angstrom (random weights give
    a thousandth of that), so that what a too thin shell misses stands far above rounding."""
    return build_model(
        arch, species=["Cu"], cutoff=4.0, features=8, n_interactions=n_interactions, seed=3, scale=10.0
    ).eval()


def periodic_cell():
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat((4, 4, 4))  # 256 atoms, 14.44 angstrom
    atoms.rattle(0.1, seed=4)
    atoms.wrap()
    return atoms


def rank_cluster(atoms, low, high, shell):
    """The atoms of the rank whose domain is low <= x < high (all y, z), plus every periodic image of every atom
    within ``shell`` of that domain: positions [M, 3], the atom each one is an image of [M], and the indices
    (into the cluster) of the rank's own atoms."""
    cell = atoms.cell.array
    lengths = np.diag(cell)
    box_low = np.array([low, 0.0, 0.0])
    box_high = np.array([high, lengths[1], lengths[2]])
    reach = np.ceil(shell / lengths).astype(int) + 1
    shifts = np.array(np.meshgrid(*(np.arange(-r, r + 1) for r in reach), indexing="ij")).reshape(3, -1).T
    positions = atoms.positions[None, :, :] + (shifts @ cell)[:, None, :]  # [S, N, 3]
    outside = np.maximum(box_low - positions, 0.0) + np.maximum(positions - box_high, 0.0)
    near = np.linalg.norm(outside, axis=-1) <= shell
    own = (
        (np.abs(shifts).sum(1) == 0)[:, None]
        & (atoms.positions[None, :, 0] >= low)
        & (atoms.positions[None, :, 0] < high)
    )
    keep = near | own
    image_of = np.broadcast_to(np.arange(len(atoms)), keep.shape)[keep]
    return positions[keep], image_of, np.flatnonzero(own[keep])


def decomposed(atoms, evaluator, shell):
    """Per-atom energies and forces of the periodic ``atoms``, computed by two "ranks" (x < L/2 and x >= L/2)."""
    energies = np.zeros(len(atoms))
    forces = np.zeros((len(atoms), 3))
    half = atoms.cell.array[0, 0] / 2
    for low, high in ((0.0, half), (half, 2 * half)):
        positions, image_of, owned = rank_cluster(atoms, low, high, shell)
        data = {
            "positions": torch.tensor(positions),
            "atomic_numbers": torch.tensor(atoms.numbers[image_of]),
            "cell": torch.zeros(3, 3, dtype=torch.float64),
            "pbc": torch.zeros(3, dtype=torch.bool),
        }
        out = evaluator(data, selected=owned)
        energies[image_of[owned]] = out["energies"].numpy()
        np.add.at(forces, image_of, out["forces"].numpy())  # the forces on images go back to their atoms
    return energies, forces


@pytest.mark.parametrize("n_interactions", [1, 2])
@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_two_ranks_with_the_declared_ghost_shell_equal_the_periodic_result(arch, n_interactions):
    """Exact with a ghost shell of interaction_range (+ skin); with one interaction, a shell one cutoff thinner is
    not (PaiNN: no ghosts beyond the skin; TensorNet: n_interactions x cutoff, the neighbours' embeddings missing).
    With two, a shell one cutoff thinner misses only atoms that the chain of hops reaches near the cutoff along x
    in this lattice, where the cosine cutoff nearly vanishes (TensorNet: 4e-11 eV/angstrom), so it is not asked."""
    model = decomposition_model(arch, n_interactions)
    atoms = periodic_cell()
    reference = model(inputs(atoms))
    evaluator = MetatomicEvaluator(metatomic_model(model))
    declared = interaction_range(model)
    energies, forces = decomposed(atoms, evaluator, declared + SKIN)
    assert np.abs(energies - reference["energies"].numpy()).max() <= EXACT
    assert np.abs(forces - reference["forces"].numpy()).max() <= EXACT
    assert np.abs(reference["forces"].numpy()).max() > 1e-4  # rattled: not zero by symmetry
    if n_interactions == 1:  # one cutoff thinner, the rank's own atoms miss part of their receptive field
        energies, forces = decomposed(atoms, evaluator, declared - model.cutoff + SKIN)
        error = max(
            np.abs(energies - reference["energies"].numpy()).max(),
            np.abs(forces - reference["forces"].numpy()).max(),
        )
        # measured: PaiNN 0.4 eV/angstrom, TensorNet 2e-5 (and with two interactions PaiNN 2e-3, TensorNet 4e-10)
        assert error > 1e-6, f"a ghost shell one cutoff thinner than interaction_range still gave {error:.1e}"


STANDALONE = """
import json, sys
import torch
from metatensor.torch import Labels, TensorBlock
from metatomic.torch import ModelEvaluationOptions, ModelOutput, System, load_atomistic_model

model = load_atomistic_model(sys.argv[1])
positions = torch.tensor([[0.0, 0.0, 0.0], [0.3, 0.2, 1.2]], dtype=torch.float64, requires_grad=True)
system = System(torch.tensor([6, 8], dtype=torch.int32), positions, torch.zeros(3, 3, dtype=torch.float64),
                torch.zeros(3, dtype=torch.bool))
vector = positions[1] - positions[0]  # the neighbour list by hand: no vesin
pairs = Labels(["first_atom", "second_atom", "cell_shift_a", "cell_shift_b", "cell_shift_c"],
               torch.tensor([[0, 1, 0, 0, 0], [1, 0, 0, 0, 0]], dtype=torch.int32))
values = torch.stack([vector, -vector]).reshape(2, 3, 1)
for options in model.requested_neighbor_lists():
    system.add_neighbor_list(options, TensorBlock(values, pairs, [Labels(["xyz"], torch.tensor([[0], [1], [2]]))],
                                                  Labels(["distance"], torch.tensor([[0]]))))
request = {"energy": ModelOutput(unit="eV", sample_kind="system")}
energy = model([system], ModelEvaluationOptions(length_unit="angstrom", outputs=request), True)["energy"]
energy = energy.block().values.sum()
energy.backward()
loaded = sorted(m for m in sys.modules if m.startswith(("physml_md", "vesin")))
print(json.dumps({"energy": energy.item(), "forces": (-positions.grad).tolist(), "loaded": loaded}))
"""


def test_the_file_runs_with_torch_and_metatomic_alone(exported):
    """What LAMMPS has: torch and metatomic-torch, no Python of ours, no vesin, no extension to load."""
    model, path = exported
    run = subprocess.run([sys.executable, "-c", STANDALONE, str(path)], capture_output=True, text=True, check=True)
    assert "extension" not in run.stderr, run.stderr
    found = json.loads(run.stdout.splitlines()[-1])
    assert found["loaded"] == []
    dimer = Atoms("CO", positions=[[0.0, 0.0, 0.0], [0.3, 0.2, 1.2]])
    reference = model(inputs(dimer))
    assert abs(found["energy"] - float(reference["energy"][0])) <= EXACT
    assert_exact(found["forces"], reference["forces"].numpy(), "forces")


def test_two_atoms_at_one_position_are_an_error_not_nan(exported):
    _, path = exported
    evaluator = MetatomicEvaluator(path)
    data = inputs(Atoms("CO", positions=[[0.0, 0.0, 0.0], [0.0, 0.0, 0.0]]))
    with pytest.raises(Exception, match="sit at the same position"):
        evaluator(data)
