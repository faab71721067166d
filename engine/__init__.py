"""RTFormer Studio engine, in layers; each imports only the layers above it in this list.

- `engine.resources`: where shipped files and user folders are.
- `engine.media`, `engine.cameras`: image and video files, camera devices.
- `engine.model`: the RTFormer network, its class sets, checkpoints, Paddle conversion.
- `engine.runtime`: running a checkpoint on frames: preprocessing, model artefacts
  (ONNX, INT8, caches), backends, which backends exist here, rendering, the `Segmenter`
  facade, the system report.
- `engine.training`: datasets, the training loop, training, pre-training, evaluation,
  the ESPNetv2 teacher, distillation, the probe metric. Never imported by the runtime
  or the app.
- `engine.commands`: the `rtformer` command line, segmenting files, benchmarks.

The app imports only the public names of `engine.runtime` and `engine.model`, and
`engine.media`, `engine.cameras` and `engine.resources` (`tests/test_layers.py`).
"""
