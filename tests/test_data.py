"""Dataset readers, augmentation alignment, the resumable stream, clear errors."""

import numpy as np
import pytest

from engine.model.checkpoint import IMAGENET_MEAN, IMAGENET_STD
from engine.model.classes import CAMVID
from engine.training.data import (
    IGNORE_INDEX,
    DatasetError,
    EpochStream,
    ResumableSampler,
    TrainTransform,
    open_dataset,
)
from tests.synthetic import make_ade20k, make_camvid, make_cityscapes, make_folder, write_png


def denormalize(image) -> np.ndarray:
    array = image.numpy().transpose(1, 2, 0) * np.asarray(IMAGENET_STD) + np.asarray(IMAGENET_MEAN)
    return np.clip(np.round(array * 255), 0, 255).astype(np.uint8)


def test_camvid_reader_maps_void_to_ignore_and_joins_splits(tmp_path):
    root = make_camvid(tmp_path / "CamVid")
    train = open_dataset("camvid", root, "train")
    both = open_dataset("camvid", root, "train+val")
    assert len(train) == 6 and len(both) == 8 and train.classes is CAMVID
    image, label = train[0]
    assert image.shape == (3, 72, 96) and label.shape == (72, 96)
    assert (label[:4] == IGNORE_INDEX).all() and label[4:].max() < 11


def test_cityscapes_reader(tmp_path):
    dataset = open_dataset("cityscapes", make_cityscapes(tmp_path / "cs"), "val")
    assert len(dataset) == 2 and dataset.classes.num_classes == 19
    assert dataset.samples[0].label.name.endswith("_gtFine_labelTrainIds.png")


def test_ade20k_reader_shifts_labels_and_ignores_other(tmp_path):
    dataset = open_dataset("ade20k", make_ade20k(tmp_path / "ade"), "val")
    _, raw = dataset.load(0)
    original = __import__("cv2").imread(str(dataset.samples[0].label), -1)
    assert ((original == 0) == (raw == IGNORE_INDEX)).all()
    assert (raw[original > 0] == original[original > 0] - 1).all()


def test_folder_reader_reads_the_class_list(tmp_path):
    dataset = open_dataset("folder", make_folder(tmp_path / "f", num_classes=3), "train")
    assert dataset.classes.names == ("background", "thing", "stuff")
    assert len(dataset.classes.palette) == 3


def test_folder_class_list_with_colours(tmp_path):
    root = make_folder(tmp_path / "f", num_classes=2)
    (root / "classes.txt").write_text("sky 10 20 30\nroad 1 2 3\n")
    assert open_dataset("folder", root, "train").classes.palette == ((10, 20, 30), (1, 2, 3))


@pytest.mark.parametrize(
    ("break_it", "message"),
    [
        (lambda root: None, "unknown dataset"),
        (lambda root: (root / "train.txt").unlink(), "split list not found"),
        (lambda root: (root / "trainannot" / "seq_001.png").unlink(), "file not found: .*seq_001.png"),
        (
            lambda root: (root / "train" / "seq_000.png").write_bytes(b"not a png"),
            "cannot read image .*seq_000",
        ),
        (
            lambda root: write_png(root / "trainannot" / "seq_000.png", np.full((72, 96), 40, np.uint8)),
            r"seq_000.png has values \[40\] outside the 11 classes",
        ),
        (
            lambda root: write_png(root / "trainannot" / "seq_000.png", np.zeros((10, 10), np.uint8)),
            "is 96x72 but its label .* is 10x10",
        ),
    ],
)
def test_bad_camvid_files_name_the_file(tmp_path, break_it, message):
    root = make_camvid(tmp_path / "CamVid")
    break_it(root)
    name = "nonsense" if message == "unknown dataset" else "camvid"
    with pytest.raises(DatasetError, match=message):
        dataset = open_dataset(name, root, "train")
        for index in range(len(dataset)):
            dataset[index]


def test_missing_root_and_missing_labels_are_reported(tmp_path):
    with pytest.raises(DatasetError, match="root folder not found"):
        open_dataset("camvid", tmp_path / "nowhere", "train")
    root = make_folder(tmp_path / "f")
    (root / "labels" / "train" / "img3.png").unlink()
    with pytest.raises(DatasetError, match=r"img3.png has no label"):
        open_dataset("folder", root, "train")
    with pytest.raises(DatasetError, match="Cityscapes image folder not found"):
        open_dataset("cityscapes", root, "train")


@pytest.mark.parametrize("key", range(6))
def test_augmentation_keeps_labels_aligned_with_the_image(tmp_path, key):
    dataset = open_dataset("folder", make_folder(tmp_path / "f", num_classes=3), "train")
    image, label = dataset.load(0)
    transform = TrainTransform(crop_size=(64, 80), scale_range=(0.5, 2.0), jitter=0.0, seed=3)
    out_image, out_label = transform(image, label, key)
    assert out_image.shape == (3, 64, 80) and out_label.shape == (64, 80)
    pixels, labels = denormalize(out_image), out_label.numpy()
    palette = np.asarray(CAMVID.palette, np.int32)
    valid = labels != IGNORE_INDEX
    distance = np.abs(pixels[valid].astype(np.int32) - palette[labels[valid]]).sum(axis=1)
    # Bilinear image vs nearest label may disagree on block borders only.
    assert (distance < 30).mean() > 0.9
    if (~valid).any():  # padding: ignore in the label, black in the image
        assert (pixels[~valid] == 0).all()


def test_small_images_are_padded_with_ignore(tmp_path):
    dataset = open_dataset("folder", make_folder(tmp_path / "f"), "train")
    image, label = dataset.load(0)
    transform = TrainTransform(crop_size=(200, 200), scale_range=(1.0, 1.0), jitter=0.0, flip=False)
    _, out_label = transform(image, label, 0)
    assert (out_label[72:] == IGNORE_INDEX).all() and (out_label[:, 96:] == IGNORE_INDEX).all()
    assert (out_label[:72, :96] != IGNORE_INDEX).all()


def test_augmentation_is_a_function_of_seed_and_key(tmp_path):
    dataset = open_dataset("folder", make_folder(tmp_path / "f"), "train")
    image, label = dataset.load(0)
    transform = TrainTransform(crop_size=(48, 48), seed=1)
    first, again, other = transform(image, label, 5), transform(image, label, 5), transform(image, label, 6)
    assert (first[0] == again[0]).all() and (first[1] == again[1]).all()
    assert not (first[0] == other[0]).all()


def test_stream_visits_every_sample_once_per_epoch_and_splits_across_ranks(tmp_path):
    dataset = open_dataset("folder", make_folder(tmp_path / "f", count=8), "train")
    stream = EpochStream(dataset, TrainTransform(crop_size=(32, 32)))
    for epoch in range(3):
        assert sorted(stream.index_at(epoch * 8 + i) for i in range(8)) == list(range(8))
    rank0 = iter(ResumableSampler(start=4, rank=0, world_size=2))
    rank1 = iter(ResumableSampler(start=4, rank=1, world_size=2))
    assert [next(rank0) for _ in range(3)] == [4, 6, 8] and [next(rank1) for _ in range(3)] == [5, 7, 9]
