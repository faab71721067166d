"""CUDA graphs for the PyTorch CUDA backend: one launch per frame instead of hundreds.

Why: on an H200, eager PyTorch took 6-9 ms a frame at every input size, and fp16
was no faster than fp32 (BENCHMARKS.md, GPU section): the time goes to launching a
few hundred kernels from Python, not to the kernels. A CUDA graph records every
kernel of one forward pass once; a replay launches them all at once.

`GraphedForward` wraps a forward function `f(frames) -> (logits, labels)`:
- per input shape and dtype, it captures after a warm-up (cuDNN's autotuning and
  lazy initialisation stay outside the graph) into static input and output buffers;
- each call copies the frames into the static input, replays, and returns copies of
  the outputs (the next replay overwrites the buffers);
- a new shape is captured in turn; at most `max_shapes` graphs are kept, the least
  recently used dropped (each holds its own memory pool);
- a capture that fails, or whose first replay disagrees with the eager forward on
  more than `1 - min_agreement` of the labels, turns graphs off for good: the reason
  is logged and kept in `fallback_reason`, and every call runs eagerly.

The capture is a parameter (`capture_cuda_graph` by default) so these decisions are
tested on machines without CUDA; the CUDA path itself is exercised by
`tools/gpu_check.py` on a GPU machine.
"""

from __future__ import annotations

import logging
import os
from collections import OrderedDict
from collections.abc import Callable

import torch

log = logging.getLogger("rtformer.engine")

Forward = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]
Capture = Callable[[Forward, torch.Tensor], Forward]
WARMUP_RUNS = 3  # before capture: cuDNN autotuning, allocator growth, lazy CUDA modules


def cuda_graphs_by_default() -> bool:
    """On unless the environment says RTFORMER_CUDA_GRAPHS=0 (the app's way to turn them off)."""
    return os.environ.get("RTFORMER_CUDA_GRAPHS", "1").strip() != "0"


class GraphError(RuntimeError):
    """A captured graph that cannot be trusted."""


def capture_cuda_graph(forward: Forward, example: torch.Tensor) -> Forward:
    """Capture `forward` on tensors shaped like `example` (on a CUDA device); returns the
    replaying function."""
    static_input = example.clone()
    side = torch.cuda.Stream(device=example.device)
    side.wait_stream(torch.cuda.current_stream(example.device))
    with torch.cuda.stream(side):
        for _ in range(WARMUP_RUNS):
            forward(static_input)
    torch.cuda.current_stream(example.device).wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        static_outputs = forward(static_input)

    def replay(frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        static_input.copy_(frames)
        graph.replay()
        logits, labels = static_outputs
        return logits.clone(), labels.clone()

    return replay


class GraphedForward:
    """`forward` through captured graphs, one per input shape (see the module docstring)."""

    def __init__(
        self,
        forward: Forward,
        capture: Capture = capture_cuda_graph,
        max_shapes: int = 4,
        min_agreement: float = 0.999,
    ) -> None:
        self.forward, self.capture = forward, capture
        self.max_shapes, self.min_agreement = max_shapes, min_agreement
        self.graphs: OrderedDict[tuple, Forward] = OrderedDict()
        self.fallback_reason = ""

    @property
    def active(self) -> bool:
        return not self.fallback_reason

    def __call__(self, frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.active:
            return self.forward(frames)
        key = (tuple(frames.shape), frames.dtype)
        replay = self.graphs.get(key)
        if replay is not None:
            self.graphs.move_to_end(key)
            return replay(frames)
        replay = self._captured(frames, key)
        return replay(frames) if replay is not None else self.forward(frames)

    def _captured(self, frames: torch.Tensor, key: tuple) -> Forward | None:
        try:
            replay = self.capture(self.forward, frames)
            self._check(replay, frames)
        except Exception as error:  # any failure: eager still works, and is what ran before
            self.fallback_reason = f"{type(error).__name__}: {error}"
            self.graphs.clear()
            log.warning("CUDA graphs off, running eagerly: %s", self.fallback_reason)
            return None
        self.graphs[key] = replay
        if len(self.graphs) > self.max_shapes:
            self.graphs.popitem(last=False)
        log.info("captured a CUDA graph for input %s", list(key[0]))
        return replay

    def _check(self, replay: Forward, frames: torch.Tensor) -> None:
        """The first replay's labels against the eager forward's, on the same frames."""
        _, expected = self.forward(frames)
        _, got = replay(frames)
        if got.shape != expected.shape:
            raise GraphError(
                f"the graph gave labels of shape {list(got.shape)}, eager {list(expected.shape)}"
            )
        agreement = (got == expected).float().mean().item()
        if agreement < self.min_agreement:
            raise GraphError(f"the graph's labels agree with eager on only {agreement:.2%} of pixels")
