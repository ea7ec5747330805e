"""physml_md/cli."""
