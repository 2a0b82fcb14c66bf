"""One entry point per DVC stage: ``python -m pipeline.stages.<stage> --help``."""
