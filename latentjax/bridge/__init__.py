"""latentjax.bridge: the Telepathy bridge (sender hidden states -> K soft tokens in the receiver's embedding space).

  model        BridgeConfig, Bridge (normalizer -> Perceiver resampler -> [FSQ] -> per-token RMS x learned scale)
  forward      BridgedModel: sender tap, receiver fed [primer] + [soft tokens] + [answer], loss, label scoring
  calibration  the normalizer's statistics pass
  batching     task examples -> padded bridge batches
  evaluate     Evaluator: greedy generation + label scoring, reports
  experiment   build(config, mesh) -> Experiment (registry name "bridge")
  tiny         a tiny sender/receiver pair with tokenizers for offline tests
"""
from latentjax.bridge.forward import BridgedModel, SenderTap, diversity_loss, resolve_layer, sender_params_for_tap
from latentjax.bridge.model import Bridge, BridgeConfig, BridgeOutput, count_params, init_bridge, median_row_rms

__all__ = ["Bridge", "BridgeConfig", "BridgeOutput", "BridgedModel", "SenderTap", "count_params", "diversity_loss",
           "init_bridge", "median_row_rms", "resolve_layer", "sender_params_for_tap"]
