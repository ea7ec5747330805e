"""Packed folders (structures as memory-mappable ``.npy`` arrays): ``writer`` (``pack``) and ``folder`` (reading one
structure at a time, ``PackedDataset``). Training splits of a folder: ``physml_md.training.packed_data``."""
