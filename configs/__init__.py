"""Experiment configs: each file defines `get_config(arg=None)` built from the shared sections in `configs.base`."""
