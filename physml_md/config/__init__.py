"""physml_md/config."""
