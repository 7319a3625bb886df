"""Built-in editing methods, one folder each. Nothing is imported here: each method is found through its
``editkit.editors`` entry point (pyproject.toml) and imported the first time it is asked for."""
