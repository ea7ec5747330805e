"""The [model] and [data] sections of the schema (training/schema_data.py)."""

from tests.training.helpers import fails, validated


def test_label_keys_follow_y_fields():
    keys = validated({"data": {"y_energy": "REF_energy", "y_stress": None}}).data.label_keys()
    assert keys.energy == "REF_energy" and keys.forces == "forces" and keys.stress is None and keys.charges is None


def test_periodic_axis_needs_a_cell_vector():
    cell = [[3, 0, 0], [0, 3, 0], [0, 0, 0]]
    fails({"data": {"pbc": True, "cell": cell}}, "data.pbc is periodic along axis 2 but data.cell row 2 is zero")
    assert validated({"data": {"pbc": [True, True, False], "cell": cell}}).data.cell == cell
