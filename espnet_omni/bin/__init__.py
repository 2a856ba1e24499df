"""Command-line entry points: ``python -m espnet_omni.bin.<name>``."""
