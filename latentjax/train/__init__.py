"""latentjax.train."""
