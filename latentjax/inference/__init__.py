"""latentjax.inference."""
