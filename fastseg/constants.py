"""Named values used across fastseg: each one is defined here and only here."""

IGNORE_INDEX = 255
"""Mask value for void pixels (object outlines, difficult regions, padding); never scored."""

VOC_CLASSES = (
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair",
    "cow", "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
    "train", "tvmonitor",
)
NUM_CLASSES = len(VOC_CLASSES)  # 21: background + 20 objects

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

STRIDE = 32
"""Total downsampling of the VGG16 encoder (five 2x2 poolings): padded sizes are multiples of it."""

DEFAULT_CROP = 320
"""The SegNet seed's random training crop."""

MIN_SIZE = 32
"""Smallest input side the models accept: one pixel left after five poolings."""


def voc_palette() -> list[int]:
    """The standard VOC colour map as a flat list of 256*3 ints, ready for `PIL.Image.putpalette`.

    Index i's colour is built from its bits: bit 0 feeds red, bit 1 green, bit 2 blue, from the
    most significant bit down, three bits of i per step.
    """
    palette = []
    for index in range(256):
        r = g = b = 0
        i = index
        for j in range(8):
            r |= ((i >> 0) & 1) << (7 - j)
            g |= ((i >> 1) & 1) << (7 - j)
            b |= ((i >> 2) & 1) << (7 - j)
            i >>= 3
        palette += [r, g, b]
    return palette


DEFAULT_TILE = 512     # tiles of 512×512 px: one VOC image fits in a single tile


DEFAULT_OVERLAP = 128  # pixels shared by neighbouring tiles; their probabilities are blended

ONNX_OPSET = 17
"""The ONNX opset `export` writes unless --opset says otherwise."""
MIN_OPSET = 11
"""The oldest opset the graph can be written in: ScatterElements (SegNet's unpooling) and dynamic Resize."""


def padded_size(sizes: list[tuple[int, int]], stride: int = STRIDE) -> tuple[int, int]:
    """The smallest (H, W) covering every size, rounded up to a multiple of `stride`."""
    h = max(s[0] for s in sizes)
    w = max(s[1] for s in sizes)
    return -(-h // stride) * stride, -(-w // stride) * stride
