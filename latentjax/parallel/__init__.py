"""latentjax.parallel."""
