"""How far two distributions of structure are apart: ``RDF`` and ``Distribution`` (what ``structure`` computes)
compared by ``histogram_overlap``, ``jensen_shannon`` (scipy's, in bits), ``rdf_difference`` and
``compare_distributions`` (a threshold from ``DEFAULT_THRESHOLDS``, measured, and a ``ComparisonResult``). float64.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Dict, Tuple

import numpy as np

from physml_md.md.arrays import ArrayLike, ToDict, count

# ---- default thresholds (see compare_distributions for the reasoning)
DEFAULT_THRESHOLDS: Dict[str, float] = {
    "jensen_shannon": 0.02,  # bits; pass when value <= threshold
    "overlap": 0.9,  # pass when value >= threshold
    "rdf_difference": 0.1,  # mean |g1 - g2| over r; pass when value <= threshold
}
_HIGHER_IS_BETTER = {"jensen_shannon": False, "overlap": True, "rdf_difference": False}


# ---------------------------------------------------------------------------------------------------------
# results


@dataclasses.dataclass(frozen=True)
class RDF(ToDict):
    """A radial distribution function averaged over frames: g(r) at bin centres r (angstrom)."""

    r: np.ndarray  # [n_bins] bin centres, angstrom
    g: np.ndarray  # [n_bins]
    label: str  # "all", "O-H", or "custom" for explicit pairs
    n_pairs: int
    n_frames: int
    r_range: Tuple[float, float]  # angstrom


@dataclasses.dataclass(frozen=True)
class Distribution(ToDict):
    """Values of a geometric quantity over frames and terms, and their histogram.

    ``values`` [n_frames, n_terms] are kept for ``compare_distributions`` (which may re-bin) but left out of
    ``to_dict``; ``n_outside`` counts the values that fell outside ``edges``.
    """

    name: str  # "bond length" or "dihedral"
    unit: str  # "angstrom" or "degree"
    values: np.ndarray
    edges: np.ndarray
    counts: np.ndarray
    n_outside: int

    @classmethod
    def of(cls, name: str, unit: str, values: np.ndarray, edges: np.ndarray) -> Distribution:
        """The histogram of ``values`` on ``edges``."""
        counts, _ = np.histogram(values, bins=edges)
        n_outside = int(values.size - counts.sum())
        return cls(name, unit, values, edges, counts.astype(np.float64), n_outside)

    @property
    def probabilities(self) -> np.ndarray:
        """The counts normalised to sum to 1."""
        total = self.counts.sum()
        return self.counts / total if total > 0 else self.counts.astype(np.float64)

    def to_dict(self) -> Dict[str, Any]:
        """Name, unit, histogram (edges, counts), sizes; the raw values are left out (they can be large)."""
        n_frames, n_terms = self.values.shape
        return {
            "name": self.name,
            "unit": self.unit,
            "edges": self.edges.tolist(),
            "counts": self.counts.tolist(),
            "n_outside": int(self.n_outside),
            "n_frames": int(n_frames),
            "n_terms": int(n_terms),
        }


@dataclasses.dataclass(frozen=True)
class ComparisonResult(ToDict):
    """A distance between a reference and a sample distribution, and whether it is within ``threshold``."""

    name: str
    metric: str  # "jensen_shannon", "overlap" or "rdf_difference"
    value: float
    threshold: float
    passed: bool

    @property
    def message(self) -> str:
        """For example 'bond length: jensen_shannon = 0.004 (pass when <= 0.02): passed'."""
        relation = ">=" if _HIGHER_IS_BETTER[self.metric] else "<="
        verdict = "passed" if self.passed else "FAILED"
        return f"{self.name}: {self.metric} = {self.value:.3g} (pass when {relation} {self.threshold:.3g}): {verdict}"


def histogram_edges(bins: int | ArrayLike, values: np.ndarray, default_range: Tuple[float, float] | None) -> np.ndarray:
    """Histogram edges from a bin count (over ``default_range`` or the data range) or from explicit edges."""
    if isinstance(bins, (int, np.integer)) and not isinstance(bins, bool):
        n_bins = count(bins, "bins")
        if default_range is not None:
            return np.linspace(default_range[0], default_range[1], n_bins + 1)
        if values.size == 0:
            raise ValueError("cannot choose bin edges for an empty set of values; pass explicit edges as bins")
        return np.histogram_bin_edges(values, bins=n_bins)
    edges = np.asarray(bins, dtype=np.float64)
    if edges.ndim != 1 or edges.size < 2 or not np.isfinite(edges).all() or np.any(np.diff(edges) <= 0):
        raise ValueError(f"bins must be a positive bin count or strictly increasing finite edges, got {bins!r}")
    return edges


# ---------------------------------------------------------------------------------------------------------
# distances between distributions


def _normalised(p: ArrayLike, q: ArrayLike) -> Tuple[np.ndarray, np.ndarray]:
    """Two histograms of the same shape, each scaled to sum to 1."""
    first = np.asarray(p, dtype=np.float64).reshape(-1)
    second = np.asarray(q, dtype=np.float64).reshape(-1)
    if np.shape(p) != np.shape(q):
        raise ValueError(f"the two histograms differ in shape: {np.shape(p)} and {np.shape(q)}; use the same bins")
    out = []
    for name, histogram in (("p", first), ("q", second)):
        if not np.isfinite(histogram).all() or (histogram < 0).any():
            raise ValueError(f"{name} must hold finite non-negative counts or probabilities")
        total = histogram.sum()
        if not total > 0:
            raise ValueError(f"{name} is empty (sums to 0): no value fell inside the bins")
        out.append(histogram / total)
    return out[0], out[1]


def histogram_overlap(p: ArrayLike, q: ArrayLike) -> float:
    """Sum over bins of the smaller of the two normalised histograms: 1 for identical, 0 for disjoint.

    ``p`` and ``q`` are counts or probabilities on the same bins (normalised here). 1 - overlap is the total
    variation distance.
    """
    first, second = _normalised(p, q)
    return float(np.minimum(first, second).sum())


def jensen_shannon(p: ArrayLike, q: ArrayLike) -> float:
    """Jensen-Shannon divergence in bits (base 2) of two histograms on the same bins: 0 identical, 1 disjoint.

    JS = (KL(p || m) + KL(q || m)) / 2 with m = (p + q) / 2 and 0 log 0 = 0. Symmetric and always finite.
    This is the divergence, not its square root (the Jensen-Shannon distance).
    """
    from scipy.spatial.distance import jensenshannon

    first, second = _normalised(p, q)
    return float(np.clip(jensenshannon(first, second, base=2.0) ** 2, 0.0, 1.0))  # scipy's is the distance


def rdf_difference(r: ArrayLike, g1: ArrayLike, g2: ArrayLike) -> float:
    """Mean absolute difference of two g(r) over their r range: integral |g1 - g2| dr / (r range).

    Each point is weighted by its bin width (from the spacing of ``r``), so for a g(r) resolved by its
    bins the value does not depend on the number of bins, and a threshold can be stated once: g(r) is
    dimensionless, and 0.1 means g differs by 0.1 on average. Statistical noise adds to it (the noise per
    bin grows as the bins get finer); compare g(r) computed with the same bins and the same r range (a
    range that includes the empty region below the first peak dilutes the value).
    """
    radius = np.asarray(r, dtype=np.float64)
    first = np.asarray(g1, dtype=np.float64)
    second = np.asarray(g2, dtype=np.float64)
    if radius.ndim != 1 or radius.size < 2:
        raise ValueError(f"r must be one-dimensional with at least 2 points, got shape {radius.shape}")
    if first.shape != radius.shape or second.shape != radius.shape:
        raise ValueError(f"r, g1 and g2 must have the same shape, got {radius.shape}, {first.shape}, {second.shape}")
    if not (np.isfinite(radius).all() and np.isfinite(first).all() and np.isfinite(second).all()):
        raise ValueError("r, g1 and g2 must be finite")
    if np.any(np.diff(radius) <= 0):
        raise ValueError("r must increase strictly (bin centres)")
    widths = np.gradient(radius)
    return float(np.sum(widths * np.abs(first - second)) / np.sum(widths))


def _values(item: Distribution | ArrayLike, name: str) -> np.ndarray:
    values = item.values if isinstance(item, Distribution) else np.asarray(item, dtype=np.float64)
    values = np.asarray(values, dtype=np.float64).reshape(-1)
    if values.size == 0 or not np.isfinite(values).all():
        raise ValueError(f"{name} must hold at least one value, all finite")
    return values


def _histogram_with_outside(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Counts on ``edges`` with one more bin on each side for the values below and above them."""
    inside, _ = np.histogram(values, bins=edges)
    return np.concatenate([[np.sum(values < edges[0])], inside, [np.sum(values > edges[-1])]])


def _compare_rdfs(reference, sample, metric: str | None) -> Tuple[str, float]:
    if not (isinstance(reference, RDF) and isinstance(sample, RDF)):
        raise ValueError("an RDF can only be compared with another RDF")
    metric = metric or "rdf_difference"
    if metric != "rdf_difference":
        raise ValueError(f"two RDFs are compared with metric 'rdf_difference', not {metric!r}")
    if reference.r.shape != sample.r.shape or not np.allclose(reference.r, sample.r, rtol=0, atol=1e-6):
        raise ValueError("the two RDFs have different r grids; compute both with the same r_range and n_bins")
    return metric, rdf_difference(reference.r, reference.g, sample.g)


def _compare_histograms(reference, sample, bins, metric: str | None) -> Tuple[str, float]:
    metric = metric or "jensen_shannon"
    if metric not in ("jensen_shannon", "overlap"):
        raise ValueError(f"metric must be 'jensen_shannon' or 'overlap' for histograms, got {metric!r}")
    first, second = _values(reference, "reference"), _values(sample, "sample")
    periodic = any(isinstance(x, Distribution) and x.unit == "degree" for x in (reference, sample))
    if periodic:  # angles: 181 degrees is -179 degrees
        first, second = (first + 180.0) % 360.0 - 180.0, (second + 180.0) % 360.0 - 180.0
    if bins is None:
        if not isinstance(reference, Distribution):
            raise ValueError("pass bins (a count or edges) when the reference is raw values")
        edges = reference.edges
    else:
        edges = histogram_edges(bins, np.concatenate([first, second]), (-180.0, 180.0) if periodic else None)
    p, q = _histogram_with_outside(first, edges), _histogram_with_outside(second, edges)
    return metric, jensen_shannon(p, q) if metric == "jensen_shannon" else histogram_overlap(p, q)


def compare_distributions(
    reference: RDF | Distribution | ArrayLike,
    sample: RDF | Distribution | ArrayLike,
    bins: int | ArrayLike | None = None,
    threshold: float | None = None,
    metric: str | None = None,
    name: str | None = None,
) -> ComparisonResult:
    """Compare a sample distribution with a reference and apply a threshold.

    Two ``RDF`` (same r grid) are compared with ``rdf_difference``. Otherwise ``reference`` and ``sample`` are
    ``Distribution`` results or raw values (any shape, flattened), histogrammed on common edges: ``bins``
    as explicit edges, a bin count (over -180..180 for dihedrals, else over the range of both sets), or
    None to use the reference Distribution's edges. Dihedral values are wrapped into [-180, 180). Values
    outside the edges are counted in one extra bin on each side, so a sample that leaves the reference's
    range is penalised, not ignored. ``metric`` is
    "jensen_shannon" (default; pass when value <= threshold) or "overlap" (pass when value >= threshold).

    Default thresholds (``DEFAULT_THRESHOLDS``), and why. Measured on 108-atom fcc Cu with ASE's EMT
    (Langevin, 5 fs steps, 15 frames 40 fs apart after 200 fs; the test_two_runs_* tests of
    tests/validation/test_structure.py), two 300 K runs from different seeds against each other and against a
    600 K run, for three sets of seeds:

    - ``rdf_difference`` <= 0.1 (all pairs, 200 bins up to 5.4 angstrom): two 300 K runs differ by
      0.02-0.04 (sampling noise of two short runs), 300 K against 600 K by 0.21-0.27.
    - ``jensen_shannon`` <= 0.02 bits (the 648 nearest-neighbour bond lengths, 50 bins over 2.0-3.4
      angstrom, 9 720 values per run): two 300 K runs give 0.001-0.0015, 300 K against 600 K 0.033-0.05.
    - ``overlap`` >= 0.9 (same histograms): two 300 K runs give 0.97-0.98, 300 K against 600 K 0.81-0.85.

    Histogram measures are biased by finite sampling: for two sets of n independent values on the same
    distribution, JS is about (bins - 1) / (4 n ln 2) bits on average (1 - overlap shrinks only as
    sqrt(bins / n)). Keep about 100 independent values per bin (MD frames closer than the correlation time
    count as fewer) or the default thresholds fail two runs of the same potential; with less data use
    fewer bins or state a looser threshold.
    """
    if isinstance(reference, RDF) or isinstance(sample, RDF):
        metric, value = _compare_rdfs(reference, sample, metric)
        name = name or f"g(r) {reference.label}"
    else:
        metric, value = _compare_histograms(reference, sample, bins, metric)
        if name is None:
            name = reference.name if isinstance(reference, Distribution) else "distribution"
    limit = DEFAULT_THRESHOLDS[metric] if threshold is None else float(threshold)
    passed = value >= limit if _HIGHER_IS_BETTER[metric] else value <= limit
    return ComparisonResult(name=name, metric=metric, value=float(value), threshold=limit, passed=bool(passed))
