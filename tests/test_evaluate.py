"""Metrics on a hand-made confusion case, and evaluation end to end."""

import numpy as np
import pytest
import torch

from engine.model.rtformer import build_model
from engine.training.data import IGNORE_INDEX, open_dataset
from engine.training.evaluate import EvalReport, evaluate, predict_probabilities, update_confusion
from tests.synthetic import TINY_MODEL, make_folder


def test_metrics_on_a_hand_made_case():
    label = np.array([[0, 0, 1, 1], [2, 2, 2, IGNORE_INDEX]])
    prediction = np.array([[0, 1, 1, 1], [2, 2, 0, 1]])
    confusion = np.zeros((4, 4), dtype=np.int64)
    update_confusion(confusion, prediction, label)
    assert confusion[:3, :3].tolist() == [[1, 1, 0], [0, 2, 0], [1, 0, 2]]
    report = EvalReport.from_confusion(confusion, ["a", "b", "c", "never"])
    # IoU: a 1/(2+2-1)=1/3, b 2/(2+3-2)=2/3, c 2/(3+2-2)=2/3; "never" does not count.
    assert report.class_iou["a"] == pytest.approx(100 / 3)
    assert report.class_iou["b"] == pytest.approx(200 / 3)
    assert report.class_iou["c"] == pytest.approx(200 / 3)
    assert report.class_iou["never"] is None
    assert report.miou == pytest.approx(500 / 9)
    assert report.pixel_accuracy == pytest.approx(500 / 7)
    assert report.mean_accuracy == pytest.approx((50 + 100 + 200 / 3) / 3)
    assert "mIoU" in report.table() and "never" in report.table()


def test_flip_and_scales_average_probabilities():
    torch.manual_seed(0)
    model = build_model("slim", num_classes=3, **TINY_MODEL).eval()
    image = torch.randn(1, 3, 64, 96)
    single = predict_probabilities(model, image)
    both = predict_probabilities(model, image, scales=(1.0, 1.5), flip=True)
    assert single.shape == both.shape == (1, 3, 64, 96)
    torch.testing.assert_close(both.sum(1), torch.ones(1, 64, 96))
    with torch.inference_mode():
        flipped = model(image.flip(3)).flip(3).softmax(1)
        larger = torch.nn.functional.interpolate(image, size=(96, 144), mode="bilinear")
        larger = torch.nn.functional.interpolate(model(larger), size=(64, 96), mode="bilinear").softmax(1)
        larger_flipped = torch.nn.functional.interpolate(image.flip(3), size=(96, 144), mode="bilinear")
        larger_flipped = torch.nn.functional.interpolate(
            model(larger_flipped), size=(64, 96), mode="bilinear"
        )
    expected = (single + flipped + larger + larger_flipped.flip(3).softmax(1)) / 4
    torch.testing.assert_close(both, expected, atol=1e-4, rtol=1e-4)


def test_evaluate_runs_at_full_resolution(tmp_path):
    dataset = open_dataset("folder", make_folder(tmp_path / "f", "val", count=2), "val")
    model = build_model("slim", num_classes=3, **TINY_MODEL)
    report = evaluate(model, dataset, progress=False)
    assert report.num_images == 2
    assert np.asarray(report.confusion).sum() == 2 * 72 * 96
    report.to_json(tmp_path / "report.json")
    assert (tmp_path / "report.json").read_text().startswith("{")


def test_eval_cli_on_the_research_and_the_deployed_paths(tmp_path, capsys):
    from engine.commands.cli import main
    from tests.synthetic import make_camvid, write_checkpoint

    root = make_camvid(tmp_path / "CamVid", {"test": 2})
    checkpoint = write_checkpoint(tmp_path / "slim.safetensors", input_size=(72, 96))
    assert (
        main(
            [
                "eval",
                str(checkpoint),
                "--data-root",
                str(root),
                "--split",
                "test",
                "-o",
                str(tmp_path / "a.json"),
            ]
        )
        == 0
    )
    assert "mIoU" in capsys.readouterr().out
    code = main(
        ["eval", str(checkpoint), "--data-root", str(root), "--split", "test", "--backend", "onnxruntime"]
    )
    assert code == 0 and "mIoU" in capsys.readouterr().out
    assert main(["eval", str(checkpoint), "--data-root", str(root), "--dataset", "cityscapes"]) == 1


def test_eval_cli_measures_a_smaller_input_on_the_apps_path_only(tmp_path, capsys):
    from engine.commands.cli import main
    from tests.synthetic import make_camvid, write_checkpoint

    root = make_camvid(tmp_path / "CamVid", {"test": 2})
    checkpoint = write_checkpoint(tmp_path / "slim.safetensors", input_size=(96, 128))
    arguments = ["eval", str(checkpoint), "--data-root", str(root), "--input-scale", "0.75"]
    assert main([*arguments, "--backend", "torch"]) == 0
    output = capsys.readouterr()
    assert "mIoU" in output.out and "at most 72x96 (75% of 96x128)" in output.err
    assert main(arguments) == 1  # the research path has --scales instead
    assert "add --backend" in capsys.readouterr().err
    assert main([*arguments[:-1], "5", "--backend", "torch"]) == 1
    assert "outside 0.1-2.0" in capsys.readouterr().err


def test_deployed_evaluation_follows_the_apps_path_unless_exact_is_asked(tmp_path):
    import cv2

    from engine.runtime.segmenter import Segmenter
    from engine.training.evaluate import evaluate_segmenter
    from tests.synthetic import make_camvid, write_checkpoint

    dataset = open_dataset("camvid", make_camvid(tmp_path / "CamVid", {"test": 2}), "test")
    # The model's input (64x88: fitted to 64x96, in multiples of 8) differs from the 72x96
    # frames: the paths differ.
    segmenter = Segmenter(write_checkpoint(tmp_path / "slim.safetensors", input_size=(64, 96)), "torch")
    app = evaluate_segmenter(segmenter, dataset, progress=False)
    exact = evaluate_segmenter(segmenter, dataset, exact=True, progress=False)
    assert app.path.startswith("app") and exact.path.startswith("exact")
    expected = np.zeros((11, 11), np.int64)
    for index in range(len(dataset)):
        image, label = dataset.load(index)
        update_confusion(expected, segmenter.predict(cv2.cvtColor(image, cv2.COLOR_RGB2BGR)), label)
    assert app.confusion == expected.tolist()
    assert app.confusion != exact.confusion
