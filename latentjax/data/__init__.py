"""latentjax.data: datasets (local files or the hub) into deterministic, sharded, checkpointable grain pipelines."""
from latentjax.data.pipeline import DEFAULT_READ_OPTIONS, apply_transforms, make_loader, process_shard
from latentjax.data.sources import SOURCES, find_data_dir, known, label_names, load_file, load_split, local_path
from latentjax.data.transforms import Pad, PadBatch, Tokenize, TokenizePromptCompletion

__all__ = ["DEFAULT_READ_OPTIONS", "SOURCES", "Pad", "PadBatch", "Tokenize", "TokenizePromptCompletion",
           "apply_transforms", "find_data_dir", "known", "label_names", "load_file", "load_split", "local_path",
           "make_loader", "process_shard"]
