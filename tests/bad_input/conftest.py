from tests.bad_input.cases import files, good_checkpoint, model, structure_files  # noqa: F401 (fixtures)
