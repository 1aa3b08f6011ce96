"""latentjax: communication between frozen LLMs in JAX/Flax (telepathy bridge, translator, subliminal learning)."""
from latentjax.models.config import DecoderConfig, load_hf_config
from latentjax.models.model import LanguageModel, from_pretrained

__all__ = ["DecoderConfig", "LanguageModel", "from_pretrained", "load_hf_config"]
__version__ = "0.1.0"
