"""The OpenVINO backend: agreement with ONNX Runtime, its compiled-model cache, shape
changes, precisions the CPU lacks; and the measured "auto" choice among CPU backends."""

import json
import logging
import shutil

import numpy as np
import pytest

import engine.runtime.artifacts as artifacts
import engine.runtime.availability as availability
from engine.runtime.artifacts import file_digest, int8_weight_bits, openvino_cache_folder
from engine.runtime.backends import openvino_capabilities, openvino_precision_hint
from engine.runtime.cpu import ISA_CAP_VARIABLE, bf16_capped, capped_flags, cpu_class
from engine.runtime.segmenter import BackendError, Segmenter
from tests.synthetic import synthetic_frame, write_checkpoint

pytest.importorskip("openvino")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return write_checkpoint(tmp_path_factory.mktemp("ov") / "slim.safetensors")


def agreement(first: Segmenter, second: Segmenter, frame: np.ndarray) -> float:
    return float((first.predict(frame) == second.predict(frame)).mean())


def test_fp32_agrees_with_onnxruntime_and_follows_shape_changes(checkpoint):
    ov = Segmenter(checkpoint, backend="openvino", device="cpu", precision="fp32")
    ort = Segmenter(checkpoint, backend="onnxruntime", device="cpu", precision="fp32")
    assert ov.description == "OpenVINO CPU fp32"
    for height, width in ((120, 160), (96, 224), (120, 160)):  # a new size compiles once more
        frame = synthetic_frame(height, width, seed=height + width)
        labels = ov.predict(frame)
        assert labels.shape == (height, width)
        assert agreement(ov, ort, frame) >= 0.99
    assert len(ov.backend._idle) == 2
    # The exact path (logits out of the runtime) agrees too.
    frame = synthetic_frame(120, 160, seed=3)
    assert (ov.predict(frame, exact=True) == ort.predict(frame, exact=True)).mean() >= 0.99


def test_bf16_runs_where_the_cpu_has_it_and_says_why_not_elsewhere(checkpoint):
    if "BF16" in openvino_capabilities():
        bf16 = Segmenter(checkpoint, backend="openvino", device="cpu", precision="bf16")
        fp32 = Segmenter(checkpoint, backend="onnxruntime", device="cpu", precision="fp32")
        assert agreement(bf16, fp32, synthetic_frame(120, 160, seed=4)) >= 0.99
    else:
        with pytest.raises(BackendError, match="this CPU has no bf16 support"):
            Segmenter(checkpoint, backend="openvino", device="cpu", precision="bf16")
        choice = next(c for c in availability.BACKEND_CHOICES if c.precision == "bf16")
        assert "no bf16" in availability.why_unavailable(choice)


def test_int8_float_parts_take_bf16_only_where_the_cpu_has_it():
    with_bf16, without = {"FP32", "INT8", "BF16"}, {"FP32", "INT8"}
    assert openvino_precision_hint("int8", with_bf16) == "bf16"
    assert openvino_precision_hint("int8", without) == "f32"
    assert openvino_precision_hint("fp32", with_bf16) == "f32"  # fp32 stays exact everywhere
    assert openvino_precision_hint("bf16", with_bf16) == "bf16"


def test_an_instruction_set_cap_makes_the_cpu_that_class_throughout(monkeypatch):
    amx = {"avx", "avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_int8", "avx_vnni"}
    assert capped_flags(amx, "AVX2") == {"avx", "avx2"}
    assert cpu_class(capped_flags(amx, "avx2")) == "AVX2"
    assert cpu_class(capped_flags(amx, "AVX512_CORE_VNNI")) == "VNNI"
    assert cpu_class(capped_flags(amx, "AVX512_CORE_BF16")) == "AVX-512 BF16"
    assert capped_flags(amx, "") == amx == capped_flags(amx, "ALL")
    monkeypatch.delenv(ISA_CAP_VARIABLE, raising=False)  # the suite may itself run under a cap
    uncapped = availability._cpu_name()
    monkeypatch.setenv(ISA_CAP_VARIABLE, "AVX2")
    assert bf16_capped() and "BF16" not in openvino_capabilities()
    assert availability._cpu_name() != uncapped  # auto times its choice again under a cap
    assert int8_weight_bits() == 7  # no VNNI under the cap: the 7-bit weights
    monkeypatch.setenv(ISA_CAP_VARIABLE, "AVX512_CORE_BF16")
    assert not bf16_capped()


def test_int8_compiles_and_runs_under_an_avx2_cap(tmp_path, checkpoint):
    """oneDNN reads the cap when it starts, hence a fresh process. Before the cap was
    honoured, a BF16 CPU capped at AVX2 failed to compile INT8 with the bf16 hint."""
    import os
    import subprocess
    import sys

    code = (
        "import sys, cv2\n"
        "from engine.runtime.segmenter import Segmenter\n"
        "from tests.synthetic import synthetic_frame\n"
        "folder = sys.argv[2]\n"
        "for seed in range(3): cv2.imwrite(f'{folder}/{seed}.png', synthetic_frame(120, 160, seed=seed))\n"
        "s = Segmenter(sys.argv[1], backend='openvino', device='cpu', precision='int8', calibration=folder)\n"
        "print(s.backend.config['INFERENCE_PRECISION_HINT'], s.predict(synthetic_frame(120, 160)).shape)\n"
    )
    env = {**os.environ, ISA_CAP_VARIABLE: "AVX2"}
    done = subprocess.run(
        [sys.executable, "-c", code, str(checkpoint), str(tmp_path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split()[-3:] == ["f32", "(120,", "160)"]


def test_int8_runs_our_qdq_model(tmp_path, checkpoint):
    frames = tmp_path / "calibration"
    frames.mkdir()
    for seed in range(3):
        import cv2

        cv2.imwrite(str(frames / f"{seed}.png"), synthetic_frame(120, 160, seed=seed))
    int8 = Segmenter(checkpoint, backend="openvino", device="cpu", precision="int8", calibration=frames)
    assert int8.description == "OpenVINO CPU int8"
    # Its float parts take bf16 where this CPU has it (the path measured on such a CPU).
    expected_hint = "bf16" if "BF16" in openvino_capabilities() else "f32"
    assert int8.backend.config["INFERENCE_PRECISION_HINT"] == expected_hint
    fp32 = Segmenter(checkpoint, backend="onnxruntime", device="cpu", precision="fp32")
    assert agreement(int8, fp32, synthetic_frame(120, 160, seed=8)) > 0.8


def test_compiled_models_are_cached_and_a_damaged_cache_is_rebuilt(tmp_path, checkpoint, caplog):
    local = shutil.copy(checkpoint, tmp_path / "cached.safetensors")
    frame = synthetic_frame(200, 136, seed=6)  # a size no other test compiles: a new cache entry
    expected = Segmenter(local, backend="onnxruntime", device="cpu").predict(frame)
    before = set(openvino_cache_folder().iterdir())
    Segmenter(local, backend="openvino", device="cpu").predict(frame)
    blobs = set(openvino_cache_folder().iterdir()) - before
    assert blobs, "the compiled model was not cached"
    stamps = {blob: blob.stat().st_mtime_ns for blob in blobs}
    Segmenter(local, backend="openvino", device="cpu").predict(frame)
    assert {blob: blob.stat().st_mtime_ns for blob in blobs} == stamps  # read back, not written again
    for blob in blobs:
        blob.write_bytes(b"\x00" * 64)
    with caplog.at_level(logging.WARNING, "rtformer.engine"):
        labels = Segmenter(local, backend="openvino", device="cpu").predict(frame)
    assert (labels == expected).mean() >= 0.99


def test_a_damaged_onnx_file_is_rebuilt_for_openvino_too(tmp_path, checkpoint, caplog):
    from engine.runtime.artifacts import FP32_KIND, artifact_path

    local = shutil.copy(checkpoint, tmp_path / "damaged.safetensors")
    artifact_path(local, FP32_KIND).write_bytes(b"not a model")
    with caplog.at_level(logging.WARNING, "rtformer.engine"):
        segmenter = Segmenter(local, backend="openvino", device="cpu")
    assert "is damaged" in caplog.text
    assert segmenter.predict(synthetic_frame()).shape == (120, 160)


# ---------------------------------------------------------------- the measured choice


def write_record(checkpoint, miou: dict[str, float], digest: str | None = None) -> None:
    record = {"checkpoint_digest": digest or file_digest(checkpoint), "miou": miou}
    availability.accuracy_record_path(checkpoint).write_text(json.dumps(record))


def test_auto_takes_only_precisions_measured_within_the_limits(tmp_path, checkpoint):
    local = shutil.copy(checkpoint, tmp_path / "measured.safetensors")
    assert availability.cpu_candidates(local, "auto", "auto") == [
        ("onnxruntime", "fp32"),
        ("openvino", "fp32"),
    ]
    bits = int8_weight_bits()  # the record names INT8 figures by the weights' width
    write_record(
        local, {"onnxruntime fp32": 50.0, f"onnxruntime int8w{bits}": 48.5, f"openvino int8w{bits}": 49.2}
    )
    candidates = availability.cpu_candidates(local, "auto", "auto")
    assert ("openvino", "int8") in candidates  # -0.8: within 1.0
    assert ("onnxruntime", "int8") not in candidates  # -1.5: over the limit
    # Asked for explicitly, a precision needs no record.
    assert availability.cpu_candidates(local, "auto", "int8") == [
        ("onnxruntime", "int8"),
        ("openvino", "int8"),
    ]
    write_record(local, {"onnxruntime fp32": 50.0, f"openvino int8w{bits}": 49.9}, digest="0" * 12)
    assert ("openvino", "int8") not in availability.cpu_candidates(local, "auto", "auto")  # other weights
    write_record(local, {"onnxruntime fp32": 50.0, "openvino int8": 49.9})  # no width: not known to hold
    assert ("openvino", "int8") not in availability.cpu_candidates(local, "auto", "auto")


@pytest.mark.parametrize(
    ("cpu", "bits"), [("AVX2", 7), ("other", 7), ("VNNI", 8), ("AVX-512 BF16", 8), ("AMX", 8)]
)
def test_int8_weights_are_8_bit_only_where_vnni_keeps_their_products_exact(
    monkeypatch, tmp_path, checkpoint, cpu, bits
):
    monkeypatch.setattr(artifacts, "cpu_class", lambda: cpu)
    monkeypatch.delenv("RTFORMER_INT8_WEIGHT_BITS", raising=False)
    assert artifacts.int8_weight_bits() == bits
    # auto reads the figure of the width this CPU runs: 8 bits lose 10 mIoU without VNNI
    local = shutil.copy(checkpoint, tmp_path / "widths.safetensors")
    write_record(local, {"onnxruntime fp32": 50.0, "openvino int8w7": 49.4, "openvino int8w8": 40.0})
    assert (("openvino", "int8") in availability.cpu_candidates(local, "auto", "auto")) == (bits == 7)
    monkeypatch.setenv("RTFORMER_INT8_WEIGHT_BITS", "7")
    assert artifacts.int8_weight_bits() == 7
    monkeypatch.setenv("RTFORMER_INT8_WEIGHT_BITS", "4")
    with pytest.raises(BackendError, match="must be 7 or 8"):
        artifacts.int8_weight_bits()


def test_auto_picks_the_fastest_measured_and_remembers_it(tmp_path, checkpoint, monkeypatch):
    local = shutil.copy(checkpoint, tmp_path / "timed.safetensors")
    timed = []

    def fake_timing(checkpoint, candidates, size, calibration, threads, device="cpu", cuda_graphs=False):
        timed.append(size)
        return {candidate: 10.0 if candidate == ("openvino", "fp32") else 20.0 for candidate in candidates}

    monkeypatch.setattr(availability, "time_candidates", fake_timing)
    segmenter = Segmenter(local, device="cpu", input_size=(360, 480))
    assert segmenter.description == "OpenVINO CPU fp32"
    assert timed == [(360, 480)]  # timed at the model's input size
    Segmenter(local, device="cpu", input_size=(360, 480))
    assert len(timed) == 1  # remembered
    Segmenter(local, device="cpu", input_size=(720, 960))
    assert len(timed) == 2  # another size is another decision


def test_auto_times_the_real_backends(tmp_path, checkpoint):
    local = shutil.copy(checkpoint, tmp_path / "real.safetensors")
    medians = availability.time_candidates(
        local, [("onnxruntime", "fp32"), ("openvino", "fp32")], (96, 128), None, 1
    )
    assert set(medians) == {("onnxruntime", "fp32"), ("openvino", "fp32")}
    assert all(value > 0 for value in medians.values())


def test_a_cache_openvino_cannot_read_is_started_afresh_and_other_failures_keep_it(checkpoint, caplog):
    segmenter = Segmenter(checkpoint, backend="openvino", device="cpu")
    backend = segmenter.backend
    real_compile = backend.core.compile_model
    keep = backend.cache / "keep.blob"
    keep.write_bytes(b"a compiled model")

    class CacheFails:
        def compile_model(self, model, device, config):
            if "CACHE_DIR" in config:
                raise RuntimeError("blob is damaged")
            return real_compile(model, device, config)

    backend.core = CacheFails()
    with caplog.at_level(logging.WARNING, "rtformer.engine"):
        assert backend._compile(backend.model) is not None
    assert "is damaged" in caplog.text and not keep.exists()  # started afresh
    keep.write_bytes(b"a compiled model")

    class EverythingFails:
        def compile_model(self, model, device, config):
            raise RuntimeError("unsupported operation")

    backend.core = EverythingFails()
    with pytest.raises(BackendError, match="cannot compile the model: unsupported operation"):
        backend._compile(backend.model)
    assert keep.exists()  # not the cache's fault: kept


def test_labels_by_reduction_are_argmax_with_the_first_maximum_winning(tmp_path):
    """The f32-hint rewrite of the labels, on a graph shaped like ours (logits and their
    ArgMax as outputs), with ties that the first class must win."""
    import onnx
    from onnx import TensorProto, helper

    from engine.runtime.backends import labels_by_reduction, openvino_core

    graph = helper.make_graph(
        [
            helper.make_node("Identity", ["scores"], ["logits"]),
            helper.make_node("ArgMax", ["logits"], ["index"], axis=1, keepdims=0),
            helper.make_node("Cast", ["index"], ["labels"], to=TensorProto.UINT8),
        ],
        "labels",
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["n", 5, "h", "w"])],
        [
            helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["n", 5, "h", "w"]),
            helper.make_tensor_value_info("labels", TensorProto.UINT8, ["n", "h", "w"]),
        ],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), tmp_path / "labels.onnx")
    core = openvino_core()
    model = core.read_model(str(tmp_path / "labels.onnx"))
    labels_by_reduction(model)
    assert "TopK" not in {node.get_type_name() for node in model.get_ops()}
    scores = np.random.default_rng(0).integers(0, 3, (2, 5, 6, 7)).astype(np.float32)  # many ties
    request = core.compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"}).create_infer_request()
    request.infer({0: scores})
    labels = request.get_tensor("labels").data
    assert labels.dtype == np.uint8
    assert np.array_equal(labels, scores.argmax(axis=1))


def test_openvino_labels_are_the_argmax_of_its_logits(checkpoint):
    """fp32 takes the reduction form of the labels on every CPU: the same labels."""
    fp32 = Segmenter(checkpoint, backend="openvino", device="cpu", precision="fp32")
    assert "TopK" not in {node.get_type_name() for node in fp32.backend.model.get_ops()}
    logits, labels = fp32.infer_both(synthetic_frame(120, 160, seed=11))
    assert np.array_equal(labels, logits.argmax(0))
