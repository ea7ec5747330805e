"""Committees and active learning: ``committee_training`` (``train_committee``), ``loop`` (``learn``: train, run MD,
select, label, retrain) and ``labelling`` (reference labels from any ASE calculator)."""
