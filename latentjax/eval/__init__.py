"""latentjax.eval."""
