"""RTFormer Studio engine: the RTFormer model, checkpoints and conversion."""

from engine.checkpoint import CheckpointError, CheckpointInfo, load_checkpoint, save_checkpoint
from engine.rtformer import RTFormer, RTFormerConfig, build_model

__all__ = [
    "CheckpointError",
    "CheckpointInfo",
    "RTFormer",
    "RTFormerConfig",
    "build_model",
    "load_checkpoint",
    "save_checkpoint",
]
