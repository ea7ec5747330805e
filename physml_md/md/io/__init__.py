"""physml_md/md/io."""
