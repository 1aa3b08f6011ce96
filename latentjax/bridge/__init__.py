"""latentjax.bridge."""
