"""physml_md.data.statistics: self-energies by least squares and per-atom energy / force statistics."""

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import bulk
from ase.calculators.emt import EMT

from physml_md.data import keys as K
from physml_md.data.collate import collate
from physml_md.data.statistics import (
    ENERGY_OUTLIER_FLOOR,
    FORCE_OUTLIER_FLOOR,
    energy_statistics,
    fit_self_energies,
    label_outliers,
)
from physml_md.data.structures import atoms_to_dict

TOL = 1e-10
SPECIES = (13, 28, 29)  # Al, Ni, Cu


def emt_alloys(count=12, seed=11):
    """fcc cells (4 or 8 atoms) with random Cu/Al/Ni occupations, rattled, labelled by ASE's EMT."""
    rng = np.random.default_rng(seed)
    images = []
    for k in range(count):
        atoms = bulk("Cu", "fcc", a=3.7, cubic=True).repeat((1, 1, 1 + k % 2))
        atoms.numbers = rng.choice(SPECIES, size=len(atoms))
        atoms.positions += rng.normal(scale=0.05, size=atoms.positions.shape)
        atoms.calc = EMT()
        atoms.get_potential_energy()
        images.append(atoms)
    return images


@pytest.fixture(scope="module")
def alloys():
    return emt_alloys()


def set_energy(data, energy):
    data = dict(data)
    data[K.ENERGY] = torch.tensor([energy], dtype=torch.float64)
    data[K.mask_key(K.ENERGY)] = torch.tensor([True])
    return data


def test_recovers_known_self_energies_exactly(alloys):
    known = {13: -2.2, 28: -4.7, 29: -3.1}
    structures = [set_energy(atoms_to_dict(a), sum(known[int(z)] for z in a.numbers)) for a in alloys]
    counts = np.array([[np.sum(a.numbers == z) for z in SPECIES] for a in alloys])
    assert np.linalg.matrix_rank(counts) == 3  # the compositions determine the answer
    fitted = fit_self_energies(structures)
    assert sorted(fitted) == sorted(known)
    for z, e in known.items():
        assert abs(fitted[z] - e) < TOL, z


def test_real_emt_energies_small_residuals(alloys):
    structures = [atoms_to_dict(a) for a in alloys]
    fitted = fit_self_energies(structures)
    # independent reference: numpy least squares on counts taken from the Atoms
    counts = np.array([[np.sum(a.numbers == z) for z in SPECIES] for a in alloys], dtype=float)
    energies = np.array([a.get_potential_energy() for a in alloys])
    reference = np.linalg.lstsq(counts, energies, rcond=None)[0]
    np.testing.assert_allclose([fitted[z] for z in SPECIES], reference, rtol=0, atol=TOL)
    # least squares: the residual is orthogonal to every column of counts (normal equations)
    residual = energies - counts @ np.array([fitted[z] for z in SPECIES])
    np.testing.assert_allclose(counts.T @ residual, 0.0, rtol=0, atol=1e-10)
    # EMT's alloy mixing energies are what is left: measured mean 0.003 and std 0.038 eV/atom here
    stats = energy_statistics(structures, fitted)
    assert abs(stats["energy_per_atom_mean"]) < 0.01
    assert stats["energy_per_atom_std"] < 0.06


def test_statistics_by_hand(alloys):
    self_energies = {13: -1.0, 28: -2.0, 29: -3.0}
    structures = [atoms_to_dict(a) for a in alloys]
    structures[3]["forces_mask"] = torch.tensor([False])  # masked labels do not count
    structures[5]["energy_mask"] = torch.tensor([False])
    stats = energy_statistics(structures, self_energies)
    used = [a for i, a in enumerate(alloys) if i != 5]
    residual = np.array(
        [(a.get_potential_energy() - sum(self_energies[int(z)] for z in a.numbers)) / len(a) for a in used]
    )
    forces = np.concatenate([a.get_forces().ravel() for i, a in enumerate(alloys) if i != 3])
    assert stats["n_energies"] == len(used) and stats["n_force_components"] == forces.size
    assert abs(stats["energy_per_atom_mean"] - residual.mean()) < TOL
    assert abs(stats["energy_per_atom_std"] - residual.std()) < TOL
    assert abs(stats["forces_rms"] - np.sqrt(np.mean(forces**2))) < TOL
    # a collated batch gives the same numbers as its structures
    batched = energy_statistics([collate(structures[:6]), collate(structures[6:])], self_energies)
    for key, value in stats.items():
        assert abs(batched[key] - value) < TOL, key


def test_statistics_without_labels():
    data = atoms_to_dict(bulk("Cu", "fcc", a=3.6))
    stats = energy_statistics([data], {29: 0.0})
    assert stats == {
        "energy_per_atom_mean": None,
        "energy_per_atom_std": None,
        "forces_rms": None,
        "n_energies": 0,
        "n_force_components": 0,
    }


def test_missing_self_energy_is_an_error(alloys):
    with pytest.raises(ValueError, match=r"no self-energy for elements \[13\]"):
        energy_statistics([atoms_to_dict(a) for a in alloys], {28: 0.0, 29: 0.0})


def test_rank_deficient_gives_minimum_norm_without_warning():
    # every labelled structure is Cu2Al (warnings are errors in this test suite)
    energies = [-10.0, -10.5, -9.5]
    structures = []
    for e in energies:
        atoms = bulk("Cu", "fcc", a=3.6).repeat((3, 1, 1))
        atoms.numbers = [29, 29, 13]
        structures.append(set_energy(atoms_to_dict(atoms), e))
    nickel = atoms_to_dict(bulk("Ni", "fcc", a=3.5))  # no energy: Ni is found but undetermined
    fitted = fit_self_energies(structures + [nickel])
    mean = np.mean(energies)
    assert abs(fitted[29] - 2 * mean / 5) < TOL
    assert abs(fitted[13] - mean / 5) < TOL
    assert abs(fitted[28]) < TOL
    # the fit still reproduces the mean energy of the one composition
    assert abs(2 * fitted[29] + fitted[13] - mean) < TOL


def test_masks_and_species(alloys):
    known = {13: -2.2, 28: -4.7, 29: -3.1}
    structures = [set_energy(atoms_to_dict(a), sum(known[int(z)] for z in a.numbers)) for a in alloys]
    structures[0] = set_energy(structures[0], 1e6)
    structures[0]["energy_mask"] = torch.tensor([False])  # a wrong but masked energy is ignored
    fitted = fit_self_energies(structures, species=[29, 28, 13, 1])
    assert sorted(fitted) == [1, 13, 28, 29] and abs(fitted[1]) < TOL
    for z, e in known.items():
        assert abs(fitted[z] - e) < TOL, z
    with pytest.raises(ValueError, match=r"elements \[13\] that are not in species \[28, 29\]"):
        fit_self_energies(structures, species=[28, 29])
    with pytest.raises(ValueError, match="no structure has an energy"):
        fit_self_energies([atoms_to_dict(bulk("Cu", "fcc", a=3.6))])


def _brute_force_shortest(images, cutoff):
    """Per element pair, the shortest distance over every atom pair and every periodic image within reach, by
    enumerating cell translations (independent of any neighbour list)."""
    from physml_md.data.elements import CHEMICAL_SYMBOLS

    shortest = {}
    for atoms in images:
        reps = [range(-3, 4) if p else range(1) for p in atoms.pbc]
        shifts = np.array([[a, b, c] for a in reps[0] for b in reps[1] for c in reps[2]]) @ atoms.cell.array
        for i, (zi, xi) in enumerate(zip(atoms.numbers, atoms.positions)):
            for j, (zj, xj) in enumerate(zip(atoms.numbers, atoms.positions)):
                d = np.linalg.norm(xj - xi + shifts, axis=1)
                if i == j:
                    d = d[d > 0]
                d = d[d < cutoff]
                if d.size:
                    low, high = sorted((int(zi), int(zj)))
                    key = f"{CHEMICAL_SYMBOLS[low]}-{CHEMICAL_SYMBOLS[high]}"
                    shortest[key] = min(shortest.get(key, np.inf), float(d.min()))
    return shortest


def test_shortest_pair_distances_match_brute_force_with_and_without_stored_edges():
    from physml_md.data.neighbors import neighbor_list
    from physml_md.data.statistics import shortest_pair_distances

    images = emt_alloys(count=6)
    molecule = images[0].copy()
    molecule.pbc = False
    images.append(molecule)
    cutoff = 4.0
    expected = _brute_force_shortest(images, cutoff)
    assert set(expected) == {"Al-Al", "Al-Ni", "Al-Cu", "Ni-Ni", "Ni-Cu", "Cu-Cu"}
    plain = [atoms_to_dict(a, dtype=torch.float64) for a in images]
    with_edges = []
    for data in plain:
        edges = neighbor_list(data[K.POSITIONS], data[K.CELL][0], data[K.PBC][0], cutoff)
        with_edges.append({**data, K.EDGE_INDEX: edges[0], K.CELL_SHIFTS: edges[1]})
    for structures in (plain, with_edges, [collate(plain)]):
        found = shortest_pair_distances(structures, cutoff)
        assert set(found) == set(expected)
        for pair, distance in expected.items():
            assert abs(found[pair] - distance) < TOL, pair


def test_pairs_closer_than_names_only_the_pairs_below_the_training_minimum():
    from physml_md.data.statistics import EXTRAPOLATION_MARGIN, pairs_closer_than

    shortest = {"Cu-Cu": 2.2, "Al-Cu": 2.0}
    pair = Atoms("CuCu", positions=[[0, 0, 0], [0, 0, 0.1]])
    found = pairs_closer_than(shortest, [atoms_to_dict(pair, dtype=torch.float64)])
    assert list(found) == ["Cu-Cu"] and abs(found["Cu-Cu"][0] - 0.1) < TOL and found["Cu-Cu"][1] == 2.2
    within_margin = Atoms("CuCu", positions=[[0, 0, 0], [0, 0, 2.2 * (1 - EXTRAPOLATION_MARGIN / 2)]])
    assert pairs_closer_than(shortest, [atoms_to_dict(within_margin, dtype=torch.float64)]) == {}
    past_margin = Atoms("CuCu", positions=[[0, 0, 0], [0, 0, 2.2 * (1 - EXTRAPOLATION_MARGIN * 1.01)]])
    assert list(pairs_closer_than(shortest, [atoms_to_dict(past_margin, dtype=torch.float64)])) == ["Cu-Cu"]
    unjudged = Atoms("NiNi", positions=[[0, 0, 0], [0, 0, 0.1]])  # no entry for Ni-Ni: not judged
    assert pairs_closer_than(shortest, [atoms_to_dict(unjudged, dtype=torch.float64)]) == {}


@pytest.mark.parametrize("periodic", [False, True], ids=["molecule (all pairs)", "crystal (neighbour list)"])
def test_pair_distance_floor_answers_as_pairs_closer_than(periodic):
    """The calculator's cheap per-step question gives pairs_closer_than's yes/no, on both of its paths, as the
    structure is squeezed through the floor."""
    from ase.build import molecule

    from physml_md.data.statistics import PairDistanceFloor, pairs_closer_than, shortest_pair_distances

    def _data(atoms):
        return {
            K.POSITIONS: torch.as_tensor(atoms.positions, dtype=torch.float64),
            K.ATOMIC_NUMBERS: torch.as_tensor(atoms.numbers),
            K.CELL: torch.as_tensor(atoms.cell.array, dtype=torch.float64),
            K.PBC: torch.as_tensor(atoms.pbc),
        }

    atoms = bulk("Cu", "fcc", a=3.6, cubic=True).repeat(2) if periodic else molecule("CH3CH2OH")
    atoms.rattle(0.02, seed=3)
    shortest = shortest_pair_distances([_data(atoms)], 5.0)
    floor = PairDistanceFloor(shortest)
    answers = []
    for scale in (1.05, 1.0, 0.97, 0.94, 0.9, 0.7):
        squeezed = atoms.copy()
        squeezed.set_cell(atoms.cell * scale, scale_atoms=True)
        squeezed.positions = atoms.positions * scale
        data = _data(squeezed)
        expected = bool(pairs_closer_than(shortest, [data]))
        assert floor.breached(data["positions"], data["atomic_numbers"], data["cell"], data["pbc"]) == expected
        answers.append(expected)
    assert answers == [False, False, False, True, True, True]  # the 5 % margin lies between 0.97 and 0.94


def _labelled(atoms):
    atoms.calc = EMT()
    atoms.get_forces()
    return atoms_to_dict(atoms)


def test_label_outliers_name_absurd_forces_and_energies_and_spare_real_tails(alloys):
    """Real EMT data, with a compressed cell (+~1 eV/atom), a hot one (0.3 angstrom rattle) and a Ni4 cell whose
    energy is 100 eV/atom off what the alloys' self-energies give: only the last and a force of 1e10
    eV/angstrom are named."""
    data = [atoms_to_dict(a) for a in alloys]
    compressed = bulk("Cu", "fcc", a=3.0, cubic=True)
    hot = bulk("Cu", "fcc", a=3.7, cubic=True).repeat((1, 1, 2))
    hot.rattle(0.3, seed=3)
    data += [_labelled(compressed), _labelled(hot)]
    assert label_outliers(data) == []
    shifted = bulk("Ni", "fcc", a=3.6, cubic=True)
    shifted.rattle(0.05, seed=4)
    data.append(set_energy(_labelled(shifted), float(_labelled(shifted)[K.ENERGY][0]) + 400.0))
    broken = dict(data[5])
    broken[K.FORCES] = broken[K.FORCES].clone()
    broken[K.FORCES][1, 2] = 1e10
    data[5] = broken
    found = label_outliers(data)
    assert len(found) == 2
    assert found[0].startswith("structure 5, atom 1: force (") and "1e+10) eV/angstrom" in found[0]
    assert found[1].startswith(f"structure {len(data) - 1}: energy ")
    assert float(found[1].split(", ")[1].split(" eV/atom")[0]) == pytest.approx(100.0, abs=0.5)
    assert label_outliers([collate(data[:8]), collate(data[8:])]) == found  # a batch counts as its structures


def test_label_outlier_energies_are_judged_by_a_fit_the_outlier_cannot_drag():
    """Cu4 and Cu2Ni2 cells; one Cu4 energy 1e10 eV. With least-squares self-energies the residuals spread by
    ~2e8 eV/atom and the outlier stands only ~12 spreads out; least absolute deviations fit around it."""
    data = []
    for k in range(20):
        atoms = bulk("Cu", "fcc", a=3.6, cubic=True)
        if k % 2:
            atoms.numbers[[0, 1]] = 28
        atoms.rattle(0.05, seed=k)
        data.append(_labelled(atoms))
    assert label_outliers(data) == []
    data[4] = set_energy(data[4], 1e10)
    (found,) = label_outliers(data)
    assert found.startswith("structure 4: energy 1e+10 eV")


def test_label_outliers_with_no_spread_use_the_floors():
    """Identical structures spread by nothing: a label is named only past the floor (10 eV/atom, 100 eV/angstrom)."""
    atoms = bulk("Cu", "fcc", a=3.6, cubic=True)
    data = [_labelled(atoms.copy()) for _ in range(5)]
    energy = float(data[0][K.ENERGY][0])
    data[1] = set_energy(data[1], energy + 4 * ENERGY_OUTLIER_FLOOR * 0.99)  # 4 atoms: 9.9 eV/atom
    data[2] = set_energy(data[2], energy + 4 * ENERGY_OUTLIER_FLOOR * 1.01)
    data[3] = dict(data[3], **{K.FORCES: torch.full((4, 3), FORCE_OUTLIER_FLOOR * 0.99, dtype=torch.float64)})
    data[4] = dict(data[4], **{K.FORCES: torch.full((4, 3), FORCE_OUTLIER_FLOOR * 1.01, dtype=torch.float64)})
    found = label_outliers(data)
    assert [f.split(":")[0] for f in found] == [f"structure 4, atom {i}" for i in range(4)] + ["structure 2"]
