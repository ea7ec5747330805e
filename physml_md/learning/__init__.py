"""physml_md/learning."""
