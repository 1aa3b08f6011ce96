"""latentjax.tasks."""
