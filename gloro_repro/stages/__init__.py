"""One entry point per DVC stage: ``python -m gloro_repro.stages.<stage> --help``."""
