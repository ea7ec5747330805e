"""Helpers shared by the tests of physml_md.md.metrics and physml_md.md.structure."""

import json

import numpy as np

A_CU = 3.61


def random_rotation(rng):
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    return q if np.linalg.det(q) > 0 else -q


def json_round_trip(result):
    return json.loads(json.dumps(result.to_dict()))
