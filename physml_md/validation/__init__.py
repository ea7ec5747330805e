"""physml_md/validation."""
