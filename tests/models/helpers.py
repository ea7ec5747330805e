"""Helpers shared by the model tests."""

import numpy as np


def reference_kernel(r, cutoff):
    """chi(r) written independently, with PhysNet's switch (smoothstep 0 -> 1 on [0, r_c/2]) complemented."""
    r = np.asarray(r, dtype=np.float64)
    x = r / (cutoff / 2)
    switch = np.where(x < 1, 6 * x**5 - 15 * x**4 + 10 * x**3, 1.0)
    phi = 1.0 - switch
    chi = phi / np.sqrt(r**2 + 1) + switch * (1 / r + r / cutoff**2 - 2 / cutoff)
    return np.where(r < cutoff, chi, 0.0)
