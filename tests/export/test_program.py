"""physml_md/export/program.py: the torch.export file (.pt2) gives the eager model's numbers in every engine."""

import zipfile

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import bulk, molecule
from ase.io import write

import physml_md
from physml_md.cli.main import main
from physml_md.export import METADATA_FILE, ExportFormatError, read_metadata, replace_metadata
from physml_md.integrations.ase import PhysMLCalculator
from physml_md.md.io.writing import read_energy_log
from physml_md.models import MODEL_NAMES, build_model
from tests.helpers import EXACT, EXPORT_SPECIES, assert_close, export_model, inputs, requires_cuda

SPECIES = EXPORT_SPECIES


@pytest.fixture(scope="module", params=MODEL_NAMES)
def arch(request):
    return request.param


@pytest.fixture(scope="module")
def model(arch):
    return export_model(arch)


@pytest.fixture(scope="module")
def program_file(model, tmp_path_factory):
    path = tmp_path_factory.mktemp("program") / "model.pt2"
    physml_md.export_potential(model, path, {"description": "test model"})
    return path


def structures():
    """A molecule, a cubic crystal, a triclinic cell smaller than the cutoff (an atom sees its own images), an
    isolated atom (no edges)."""
    cu = bulk("Cu", "fcc", a=3.6, cubic=True).repeat(2)
    cu.rattle(0.05, seed=1)
    small = bulk("Cu", "fcc", a=3.6)  # primitive: 2.5 angstrom vectors at 60 degrees
    small.cell[2] += [0.3, -0.2, 0.1]
    small.rattle(0.02, seed=2)
    return {
        "ethanol": molecule("CH3CH2OH"),
        "cu32": cu,
        "triclinic_small": small,
        "isolated_atom": Atoms("O", positions=[[0.0, 0.0, 0.0]]),
    }


def batch_of(frames):
    """One data dict holding several structures (a batch)."""
    parts = [inputs(atoms) for atoms in frames]
    data = {key: torch.cat([part[key] for part in parts]) for key in ("positions", "atomic_numbers", "cell", "pbc")}
    data["batch"] = torch.cat([torch.full((len(atoms),), index) for index, atoms in enumerate(frames)])
    return data


def assert_equal_outputs(out, eager, what):
    assert set(out) == set(eager), what
    for key in eager:
        assert_close(out[key].numpy(), eager[key].numpy(), EXACT[torch.float64], f"{what} {key}")


def test_metadata_names_the_format(program_file, model):
    meta = read_metadata(program_file)
    assert meta["format"] == "export" and meta["device"] == "cpu"
    assert meta["species"] == SPECIES and meta["cutoff"] == 4.5 and meta["description"] == "test model"
    with zipfile.ZipFile(program_file) as archive:  # where the TorchScript file keeps it: <archive>/extra/
        assert any(name.endswith("/extra/" + METADATA_FILE) for name in archive.namelist())


def test_program_equals_eager_model(model, program_file):
    loaded = physml_md.load_potential(program_file)
    assert loaded.format == "export" and loaded.cutoff == 4.5 and loaded.atomic_numbers == [1, 6, 8, 29]
    for name, atoms in structures().items():
        assert_equal_outputs(loaded(inputs(atoms)), model(inputs(atoms)), name)
    # one call on a batch: a molecule and two crystals of different sizes (the program's sizes are dynamic)
    frames = list(structures().values())[:3]
    assert_equal_outputs(loaded(batch_of(frames)), model(batch_of(frames)), "batch")


def test_program_runs_without_gradient_mode(model, program_file):
    loaded = physml_md.load_potential(program_file)
    atoms = structures()["ethanol"]
    with torch.inference_mode():  # its backward pass is part of the traced graph
        out = loaded(inputs(atoms))
    assert_close(out["forces"].numpy(), model(inputs(atoms))["forces"].numpy(), EXACT[torch.float64], "forces")


def test_bad_input_gets_the_torchscript_files_message(model, program_file, tmp_path):
    program = physml_md.load_potential(program_file)
    script = physml_md.load_potential(physml_md.export_potential(model, tmp_path / "model.pt"))
    nan = molecule("H2O")
    nan.positions[1, 0] = np.nan
    overlap = molecule("H2O")
    overlap.positions[2] = overlap.positions[1]
    cases = {"unknown element": molecule("NH3"), "NaN": nan, "overlap": overlap}
    for what, atoms in cases.items():
        messages = []
        for loaded in (program, script):
            with pytest.raises(ValueError) as error:  # the TorchScript file's too, not a torch.jit.Error
                loaded(inputs(atoms))
            messages.append(str(error.value))
        assert messages[0] == messages[1], what


def test_charge_head_outputs(tmp_path):
    torch.manual_seed(1)
    model = build_model("painn", species=["H", "O"], cutoff=4.0, features=8, n_interactions=1, charges=True)
    model = model.eval()
    path = physml_md.export_potential(model, tmp_path / "charges.pt2")
    water = molecule("H2O")
    data = dict(inputs(water), total_charge=torch.tensor([-1.0], dtype=torch.float64))
    out = physml_md.load_potential(path)(data)
    assert {"charges", "total_charge", "dipole"} <= set(out)
    assert_equal_outputs(out, model(data), "charged water")
    assert float(out["total_charge"][0]) == pytest.approx(-1.0, abs=1e-12)


def test_float32_program(tmp_path, arch):
    model = build_model(arch, species=["Cu"], cutoff=4.0, features=8, n_interactions=1, dtype="float32").eval()
    path = physml_md.export_potential(model, tmp_path / "m32.pt2")
    assert read_metadata(path)["dtype"] == "float32"
    atoms = structures()["cu32"]
    out = physml_md.load_potential(path)(inputs(atoms, torch.float32))
    eager = model(inputs(atoms, torch.float32))
    assert out["forces"].dtype == torch.float32
    assert_close(out["forces"].numpy(), eager["forces"].numpy(), EXACT[torch.float32], "float32 forces")


def test_format_and_file_name_must_agree(model, tmp_path):
    with pytest.raises(ValueError, match=r"rename the output to model\.pt2"):
        physml_md.export_potential(model, tmp_path / "model.pt", format="export")
    with pytest.raises(ValueError, match=r"rename the output to model\.pt\b"):
        physml_md.export_potential(model, tmp_path / "model.pt2", format="torchscript")
    with pytest.raises(ValueError, match="format must be one of"):
        physml_md.export_potential(model, tmp_path / "model.pt", format="onnx")
    assert not list(tmp_path.iterdir())  # nothing half-written


def test_ase_calculator_reads_both_files(model, program_file, tmp_path):
    script_file = physml_md.export_potential(model, tmp_path / "model.pt")
    for name in ("ethanol", "triclinic_small"):
        atoms = structures()[name]
        results = []
        for path in (script_file, program_file):
            atoms.calc = PhysMLCalculator(path)
            properties = ["energy", "forces", "energies"] + (["stress"] if atoms.pbc.any() else [])
            atoms.calc.calculate(atoms, properties)
            results.append(dict(atoms.calc.results))
        for key in results[0]:
            assert_close(np.asarray(results[1][key]), np.asarray(results[0][key]), EXACT[torch.float64], key)


def test_openmm_auto_backend_runs_the_program_with_pythonforce(model, program_file):
    pytest.importorskip("openmm")
    from physml_md.integrations.openmm import create_force, create_system
    from physml_md.integrations.openmm_topology import topology_from_atoms
    from tests.integrations.openmm_tools import energy_forces, make_context

    atoms = structures()["cu32"]
    topology, positions = topology_from_atoms(atoms)
    system = create_system(topology, program_file, backend="auto")
    energy, forces = energy_forces(make_context(system, positions))
    eager = model(inputs(atoms))
    assert energy == pytest.approx(float(eager["energy"][0]), rel=1e-12)
    assert_close(forces, eager["forces"].numpy(), 1e-12, "OpenMM forces")
    force = create_force(program_file, atoms.numbers, periodic=True)
    assert type(force).__name__ == "PythonForce"


@pytest.mark.torchforce
def test_torchforce_refuses_a_program_and_says_what_to_do(program_file):
    from physml_md.integrations.openmm import create_force

    with pytest.raises(ValueError, match="TorchForce runs TorchScript files only"):
        create_force(program_file, [29], backend="torchforce", periodic=True)


def test_openmmml_plugin_accepts_a_program(model, program_file):
    openmmml = pytest.importorskip("openmmml")
    from physml_md.integrations.openmm_topology import topology_from_atoms
    from tests.integrations.openmm_tools import energy_forces, make_context

    atoms = structures()["ethanol"]
    topology, positions = topology_from_atoms(atoms)
    system = openmmml.MLPotential("physml", modelPath=str(program_file)).createSystem(topology)
    energy, _ = energy_forces(make_context(system, positions))
    assert energy == pytest.approx(float(model(inputs(atoms))["energy"][0]), rel=1e-12)


def test_command_line_exports_and_reads_programs(cu_model, tmp_path, capsys):
    out = tmp_path / "cu.pt2"
    assert main(["export", str(cu_model.best_checkpoint), str(out)]) == 0
    assert main(["info", str(out)]) == 0
    assert "export (for cpu)" in capsys.readouterr().out
    frames = tmp_path / "frames.extxyz"
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat(2)
    atoms.rattle(0.02, seed=0)
    write(frames, atoms)
    for path in (cu_model.model_path, out):
        assert main(["evaluate", str(path), str(frames)]) == 0
    printed = capsys.readouterr().out.splitlines()
    rows = [line.split() for line in printed if line.strip()[:1].isdigit()]
    assert len(rows) == 2 and rows[0][3] == rows[1][3]  # the same energy, to the printed digits
    # MD in both engines, the same trajectory as from the TorchScript file (NVE from the same start)
    logs = {}
    for engine in ("ase", "openmm"):
        for path in (cu_model.model_path, out):
            run = tmp_path / f"{engine}-{path.suffix[1:]}.extxyz"
            args = [str(path), str(frames), "--engine", engine, "--ensemble", "nve", "--time", "5 fs"]
            assert main(["md", *args, "--timestep", "0.5 fs", "--report-every", "5", "--out", str(run), "--quiet"]) == 0
            logs[engine, path.suffix] = read_energy_log(run.with_suffix(".csv"))
        script, program = logs[engine, ".pt"], logs[engine, ".pt2"]
        assert np.allclose(program["potential_ev"], script["potential_ev"], rtol=1e-12, atol=0), engine
    capsys.readouterr()


def _altered_copies(path, tmp_path):
    """Copies of ``path`` whose metadata claim other species or another cutoff than the program was traced with."""
    import shutil

    changes = {
        "species": {"species": ["H", "C", "O", "Ag"], "atomic_numbers": [1, 6, 8, 47]},
        "one species more": {"species": [*SPECIES, "Ag"], "atomic_numbers": [1, 6, 8, 29, 47]},
        "cutoff": {"cutoff": read_metadata(path)["cutoff"] + 1.0},
    }
    for what, change in changes.items():
        altered = tmp_path / f"altered {what}{path.suffix}"
        shutil.copyfile(path, altered)
        replace_metadata(altered, {**read_metadata(path), **change})
        yield what, altered


def test_metadata_that_disagree_with_the_program_are_refused(program_file, tmp_path):
    """The program's own constants (species, cutoff) are checked against the metadata, as for TorchScript files:
    the metadata species map atomic numbers to the program's species indices, and the metadata cutoff sets the
    neighbour list, so an edited metadata document would give wrong numbers without a word."""
    expected = {
        "species": r"metadata species \['H', 'C', 'O', 'Ag'\] do not match the module's \[1, 6, 8, 29\]",
        "one species more": r"metadata species .*'Ag'\] do not match the module's \[1, 6, 8, 29\]",
        "cutoff": r"metadata cutoff 5\.5 angstrom does not match the module's 4\.5 angstrom",
    }
    for what, altered in _altered_copies(program_file, tmp_path):
        with pytest.raises(ExportFormatError, match=expected[what] + ".*altered after export: export the model again"):
            physml_md.load_potential(altered)
    assert physml_md.load_potential(program_file).cutoff == 4.5  # the file itself still loads


@pytest.mark.slow
def test_aotinductor_file_equals_eager_model(tmp_path):
    torch.manual_seed(2)
    model = build_model("tensornet", species=SPECIES, cutoff=4.5, features=8, n_interactions=1).eval()
    path = physml_md.export_potential(model, tmp_path / "model.pt2", format="aotinductor")
    loaded = physml_md.load_potential(path)
    assert loaded.format == "aotinductor" and read_metadata(path)["format"] == "aotinductor"
    for name, atoms in structures().items():
        assert_equal_outputs(loaded(inputs(atoms)), model(inputs(atoms)), name)
    for _, altered in _altered_copies(path, tmp_path):
        with pytest.raises(ExportFormatError, match="altered after export"):
            physml_md.load_potential(altered)


@requires_cuda
def test_program_moves_to_cuda(model, program_file):
    loaded = physml_md.load_potential(program_file, device="cuda")
    atoms = structures()["cu32"]
    out = loaded({key: value.to("cuda") for key, value in inputs(atoms).items()})
    assert_close(out["forces"].cpu().numpy(), model(inputs(atoms))["forces"].numpy(), 1e-9, "forces on cuda")


def test_aotinductor_says_it_is_compiling_before_the_long_silent_build(model, tmp_path, monkeypatch, capsys):
    """The C++ build takes about a minute with no output of its own; the export says what it is doing first."""
    printed = []

    def fake_compile(program, package_path):  # stands in for the build: what had been printed when it started
        printed.append(capsys.readouterr().err)
        raise RuntimeError("no compiler here")

    monkeypatch.setattr(torch._inductor, "aoti_compile_and_package", fake_compile)
    with pytest.raises(RuntimeError, match="AOTInductor could not compile"):
        physml_md.export_potential(model, tmp_path / "model.pt2", format="aotinductor")
    assert printed == ["compiling the model with AOTInductor (a C++ build; this takes about a minute)...\n"]
    assert not (tmp_path / "model.pt2").exists()
