"""latentjax.data."""
