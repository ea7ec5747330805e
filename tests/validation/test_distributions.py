"""physml_md.validation.distributions: distances between two histograms or two g(r), against definitions by hand."""

import math

import numpy as np
import pytest

from physml_md.validation.distributions import compare_distributions, histogram_overlap, jensen_shannon, rdf_difference


def divergence_by_hand(p, q):
    """(KL(p || m) + KL(q || m)) / 2 in bits, m = (p + q) / 2, 0 log 0 = 0."""
    p, q = np.asarray(p, float) / np.sum(p), np.asarray(q, float) / np.sum(q)
    m = 0.5 * (p + q)
    return 0.5 * sum(float(np.sum(a[a > 0] * np.log2(a[a > 0] / m[a > 0]))) for a in (p, q))


# ---- distances between distributions


def test_jensen_shannon_and_overlap_limits_and_symmetry():
    rng = np.random.default_rng(13)
    p, q = rng.random(30), rng.random(30)
    assert jensen_shannon(p, p) == 0.0 and histogram_overlap(p, 3 * p) == pytest.approx(1.0)
    assert jensen_shannon([1, 2, 0, 0], [0, 0, 5, 1]) == pytest.approx(1.0)
    assert histogram_overlap([1, 2, 0, 0], [0, 0, 5, 1]) == 0.0
    assert jensen_shannon(p, q) == pytest.approx(jensen_shannon(q, p), rel=1e-12)
    assert histogram_overlap(p, q) == pytest.approx(histogram_overlap(q, p), rel=1e-12)
    # the divergence in bits, by its definition (scipy's jensenshannon, used inside, is its square root in nats)
    assert jensen_shannon(p, q) == pytest.approx(divergence_by_hand(p, q), rel=1e-12)
    assert jensen_shannon([3, 0, 1], [1, 1, 0]) == pytest.approx(divergence_by_hand([3, 0, 1], [1, 1, 0]), rel=1e-12)
    # overlap = 1 - total variation distance
    pn, qn = p / p.sum(), q / q.sum()
    assert histogram_overlap(p, q) == pytest.approx(1.0 - 0.5 * np.abs(pn - qn).sum(), rel=1e-12)
    assert histogram_overlap([1, 1, 0], [0, 1, 1]) == pytest.approx(0.5)


def test_rdf_difference_does_not_depend_on_the_number_of_bins():
    def g(r):
        return np.where(r > 2.2, 1.0 + 1.5 * np.exp(-((r - 2.55) ** 2) / 0.02), 0.0)

    values = []
    for n_bins in (100, 400, 2000):  # bins of 0.05 angstrom or finer resolve the peak (width 0.1)
        edges = np.linspace(0.0, 5.0, n_bins + 1)
        r = 0.5 * (edges[1:] + edges[:-1])
        assert rdf_difference(r, g(r), g(r) + 0.1) == pytest.approx(0.1, rel=1e-12)
        values.append(rdf_difference(r, g(r), g(r - 0.05)))
    # by hand: the step at 2.2 moves by 0.05 (area 0.05) and a Gaussian of height 1.5, width 0.1 moves by 0.05
    # (area 2 * 1.5 * sqrt(2 pi) * 0.1 * erf(0.025 / (0.1 sqrt 2))), over a range of 5 angstrom
    by_hand = (0.05 + 2 * 1.5 * math.sqrt(2 * math.pi) * 0.1 * math.erf(0.025 / (0.1 * math.sqrt(2)))) / 5.0
    assert values[-1] == pytest.approx(by_hand, rel=1e-3)
    np.testing.assert_allclose(values, values[-1], rtol=0.03)
    assert rdf_difference(r, g(r), g(r)) == 0.0


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: jensen_shannon([1, 2], [1, 2, 3]), "differ in shape"),
        (lambda: histogram_overlap([1, -2], [1, 2]), "non-negative"),
        (lambda: jensen_shannon([0, 0], [1, 2]), r"p is empty \(sums to 0\)"),
        (lambda: rdf_difference([0.0, 0.1], [1.0, 1.0], [1.0]), "same shape"),
        (lambda: rdf_difference([0.1, 0.0], [1.0, 1.0], [1.0, 1.0]), "r must increase strictly"),
        (lambda: compare_distributions([1.0, 2.0], [1.0, 2.0]), "pass bins"),
        (lambda: compare_distributions([1.0], [1.0], bins=3, metric="kl"), "metric must be 'jensen_shannon'"),
    ],
)
def test_bad_inputs_raise_one_clear_error(call, message):
    with pytest.raises(ValueError, match=message):
        call()
