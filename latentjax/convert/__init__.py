"""latentjax.convert."""
