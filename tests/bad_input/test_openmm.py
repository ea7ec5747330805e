"""Bad input through the OpenMM adapter (create_force with the pythonforce backend; create_system): OpenMM turns the
callback's exception into an OpenMMException carrying its message, which must be the model's sentence only."""

import re

import openmm
import pytest
from openmm import unit

from physml_md.export import ExportFormatError
from physml_md.export.checkpoint import CheckpointError
from physml_md.integrations.openmm import create_force
from tests.bad_input.cases import CASES, assert_plain_sentence, truncated

# the empty structure has no particles to put in a System; an unknown element is refused when the force is made
IN_A_CONTEXT = sorted(set(CASES) - {"empty structure", "unknown element", "singular cell"})


def _energy(force, atoms):
    system = openmm.System()
    for mass in atoms.get_masses():
        system.addParticle(mass)
    system.addForce(force)
    context = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference"))
    context.setPositions(atoms.positions / 10.0 * unit.nanometer)
    return context.getState(getEnergy=True).getPotentialEnergy()


@pytest.mark.parametrize("suffix", [".pt", ".pt2"])
@pytest.mark.parametrize("case", IN_A_CONTEXT)
def test_openmm_pythonforce_reports_the_models_sentence(files, case, suffix):
    make, start, fix = CASES[case]
    atoms = make()
    force = create_force(files[suffix], atoms.numbers, periodic=False, backend="pythonforce")
    with pytest.raises(openmm.OpenMMException) as error:
        _energy(force, atoms)
    assert_plain_sentence(str(error.value), start, fix)


@pytest.mark.parametrize("suffix", [".pt", ".pt2"])
def test_an_unknown_element_is_refused_when_the_force_is_made(files, suffix):
    make, _, _ = CASES["unknown element"]
    with pytest.raises(ValueError) as error:
        create_force(files[suffix], make().numbers, periodic=False, backend="pythonforce")
    assert_plain_sentence(str(error.value), "element(s) N in the system are not known to this model", "model trained")


@pytest.mark.parametrize("fraction", [0.01, 0.5, 0.999], ids=["start", "half", "last_bytes"])
def test_a_truncated_checkpoint_is_named_as_such(good_checkpoint, tmp_path, fraction):
    path = truncated(good_checkpoint, tmp_path / "cut.ckpt", fraction)
    with pytest.raises(CheckpointError, match=re.escape(str(path)) + r".*damaged or truncated.*copy it again"):
        create_force(path, [29], periodic=True, backend="pythonforce")


@pytest.mark.parametrize("suffix", [".pt", ".pt2"])
def test_a_truncated_export_is_named_as_such(files, tmp_path, suffix):
    path = truncated(files[suffix], tmp_path / f"cut{suffix}", 0.5)
    with pytest.raises(ExportFormatError, match=r"damaged or truncated"):
        create_force(path, [29], periodic=True, backend="pythonforce")
