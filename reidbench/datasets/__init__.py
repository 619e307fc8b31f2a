"""Dataset adapters: each reads one on-disk layout into a split (``base``) and registers its
datasets (``catalog.register_dataset``) in its own module. Importing this package registers
nothing; ``registry.load_builtins`` (called by ``catalog.build_dataset`` and the CLI) imports the
adapter modules."""
