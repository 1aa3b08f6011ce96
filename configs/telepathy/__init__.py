"""Telepathy bridge configs (configs/telepathy/<task>.py); shared sections in `configs.telepathy.common`."""
