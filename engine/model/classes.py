"""Class names and colour palettes (RGB) of the datasets the engine knows."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ClassSet:
    """The classes of one dataset: names in label order, an RGB colour each."""

    dataset: str
    names: tuple[str, ...]
    palette: tuple[tuple[int, int, int], ...]
    ignore_index: int = 255

    def __post_init__(self) -> None:
        if len(self.names) != len(self.palette):
            raise ValueError(f"{self.dataset}: {len(self.names)} names but {len(self.palette)} colours")

    @property
    def num_classes(self) -> int:
        return len(self.names)


def _from_hex(colours: str) -> tuple[tuple[int, int, int], ...]:
    return tuple(tuple(bytes.fromhex(colour)) for colour in colours.split())  # type: ignore[misc]


CITYSCAPES = ClassSet(
    "cityscapes",
    (
        "road",
        "sidewalk",
        "building",
        "wall",
        "fence",
        "pole",
        "traffic light",
        "traffic sign",
        "vegetation",
        "terrain",
        "sky",
        "person",
        "rider",
        "car",
        "truck",
        "bus",
        "train",
        "motorcycle",
        "bicycle",
    ),
    _from_hex(
        "804080 f423e8 464646 66669c be9999 999999 faaa1e dcdc00 6b8e23 98fb98"
        " 4682b4 dc143c ff0000 00008e 000046 003c64 005064 0000e6 770b20"
    ),
)

# CamVid, SegNet's 360x480 version: 11 classes, label 11 ("void") is ignored.
CAMVID = ClassSet(
    "camvid",
    (
        "Sky",
        "Building",
        "Pole",
        "Road",
        "Pavement",
        "Tree",
        "SignSymbol",
        "Fence",
        "Car",
        "Pedestrian",
        "Bicyclist",
    ),
    _from_hex("808080 800000 c0c080 804080 3c28de 808000 c08080 404080 400080 404000 0080c0"),
    ignore_index=11,
)

ADE20K = ClassSet(
    "ade20k",
    (
        "wall",
        "building",
        "sky",
        "floor",
        "tree",
        "ceiling",
        "road",
        "bed",
        "windowpane",
        "grass",
        "cabinet",
        "sidewalk",
        "person",
        "earth",
        "door",
        "table",
        "mountain",
        "plant",
        "curtain",
        "chair",
        "car",
        "water",
        "painting",
        "sofa",
        "shelf",
        "house",
        "sea",
        "mirror",
        "rug",
        "field",
        "armchair",
        "seat",
        "fence",
        "desk",
        "rock",
        "wardrobe",
        "lamp",
        "bathtub",
        "railing",
        "cushion",
        "base",
        "box",
        "column",
        "signboard",
        "chest of drawers",
        "counter",
        "sand",
        "sink",
        "skyscraper",
        "fireplace",
        "refrigerator",
        "grandstand",
        "path",
        "stairs",
        "runway",
        "case",
        "pool table",
        "pillow",
        "screen door",
        "stairway",
        "river",
        "bridge",
        "bookcase",
        "blind",
        "coffee table",
        "toilet",
        "flower",
        "book",
        "hill",
        "bench",
        "countertop",
        "stove",
        "palm",
        "kitchen island",
        "computer",
        "swivel chair",
        "boat",
        "bar",
        "arcade machine",
        "hovel",
        "bus",
        "towel",
        "light",
        "truck",
        "tower",
        "chandelier",
        "awning",
        "streetlight",
        "booth",
        "television receiver",
        "airplane",
        "dirt track",
        "apparel",
        "pole",
        "land",
        "bannister",
        "escalator",
        "ottoman",
        "bottle",
        "buffet",
        "poster",
        "stage",
        "van",
        "ship",
        "fountain",
        "conveyer belt",
        "canopy",
        "washer",
        "plaything",
        "swimming pool",
        "stool",
        "barrel",
        "basket",
        "waterfall",
        "tent",
        "bag",
        "minibike",
        "cradle",
        "oven",
        "ball",
        "food",
        "step",
        "tank",
        "trade name",
        "microwave",
        "pot",
        "animal",
        "bicycle",
        "lake",
        "dishwasher",
        "screen",
        "blanket",
        "sculpture",
        "hood",
        "sconce",
        "vase",
        "traffic light",
        "tray",
        "ashcan",
        "fan",
        "pier",
        "crt screen",
        "plate",
        "monitor",
        "bulletin board",
        "shower",
        "radiator",
        "glass",
        "clock",
        "flag",
    ),
    _from_hex(
        """
    787878 b47878 06e6e6 503232 04c803 787850 8c8c8c cc05ff e6e6e6 04fa07 e005ff
    ebff07 96053d 787846 08ff33 ff0652 8fff8c ccff04 ff3307 cc4603 0066c8 3de6fa
    ff0633 0b66ff ff0747 ff09e0 0907e6 dcdcdc ff095c 7009ff 08ffd6 07ffe0 ffb806
    0aff47 ff290a 07ffff e0ff08 6608ff ff3d06 ffc207 ff7a08 00ff14 ff0829 ff0599
    0633ff eb0cff a09614 00a3ff 8c8c8c fa0a0f 14ff00 1fff00 ff1f00 ffe000 99ff00
    0000ff ff4700 00ebff 00adff 1f00ff 0bc8c8 ff5200 00fff5 003dff 00ff70 00ff85
    ff0000 ffa300 ff6600 c2ff00 008fff 33ff00 0052ff 00ff29 00ffad 0a00ff adff00
    00ff99 ff5c00 ff00ff ff00f5 ff0066 ffad00 ff0014 ffb8b8 001fff 00ff3d 0047ff
    ff00cc 00ffc2 00ff52 000aff 0070ff 3300ff 00c2ff 007aff 00ffa3 ff9900 00ff0a
    ff7000 8fff00 5200ff a3ff00 ffeb00 08b8aa 8500ff 00ff5c b800ff ff001f 00b8ff
    00d6ff ff0070 5cff00 00e0ff 70e0ff 46b8a0 a300ff 9900ff 47ff00 ff00a3 ffcc00
    ff008f 00ffeb 85ff00 ff00eb f500ff ff007a fff500 0abed4 d6ff00 00ccff 1400ff
    ffff00 0099ff 0029ff 00ffcc 2900ff 29ff00 ad00ff 00f5ff 4700ff 7a00ff 00ffb8
    005cff b8ff00 0085ff ffd600 19c2c2 66ff00 5c00ff
        """
    ),
)

CLASS_SETS: dict[str, ClassSet] = {c.dataset: c for c in (CITYSCAPES, CAMVID, ADE20K)}


def class_set(dataset: str) -> ClassSet:
    """The class set of a known dataset ("cityscapes", "camvid", "ade20k")."""
    try:
        return CLASS_SETS[dataset.lower()]
    except KeyError:
        raise ValueError(f"unknown dataset {dataset!r}; known: {sorted(CLASS_SETS)}") from None


def generic_class_set(num_classes: int, dataset: str = "custom") -> ClassSet:
    """Names "class 0".."class N-1" and well-separated colours (golden-ratio hues)."""
    import colorsys

    palette = []
    for index in range(num_classes):
        hue = (index * 0.618033988749895) % 1.0
        value = 0.95 if index % 2 == 0 else 0.7
        red, green, blue = colorsys.hsv_to_rgb(hue, 0.75, value)
        palette.append((round(red * 255), round(green * 255), round(blue * 255)))
    return ClassSet(dataset, tuple(f"class {i}" for i in range(num_classes)), tuple(palette))
