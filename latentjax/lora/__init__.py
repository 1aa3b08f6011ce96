"""latentjax.lora."""
