"""The RTFormer network (`rtformer`), class sets (`classes`), the checkpoint format
(`checkpoint`) and conversion of the official PaddleSeg weights (`convert_paddle`)."""

from engine.model.checkpoint import CheckpointError, CheckpointInfo, load_checkpoint, save_checkpoint
from engine.model.rtformer import RTFormer, RTFormerConfig, build_model

__all__ = [
    "CheckpointError",
    "CheckpointInfo",
    "RTFormer",
    "RTFormerConfig",
    "build_model",
    "load_checkpoint",
    "save_checkpoint",
]
