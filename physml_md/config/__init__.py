"""The configuration (pydantic): ``types`` (shared value types), ``data`` ([model], [data]), ``training``, ``trainer``,
``md`` (the MD settings), ``learning``, ``schema`` (``Config``) and ``load`` (``load_config``: TOML/YAML, overrides)."""
