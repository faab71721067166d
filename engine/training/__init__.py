"""Training and evaluation: datasets and augmentation (`data`), the loop shared by
training and pre-training (`loop`), segmentation training (`train`), backbone
pre-training (`pretrain`), evaluation (`evaluate`), the ESPNetv2 teacher
(`espnetv2`), distillation (`distill`) and the probe metric (`probe`).

Imports the model, the runtime and media; nothing outside `engine.commands` and the
tools imports it.
"""
