"""physml_md/data/packed."""
