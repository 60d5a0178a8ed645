"""The spec tables: every network of the paper is a row here, not code elsewhere.

Table 1 (ImageNet) maps a depth to its block kind and blocks per stage; section 4.2
(CIFAR-10) builds every 6n+2 net from n. Adding a depth is adding a row.
"""

from __future__ import annotations

import dataclasses

BLOCK_KINDS = ("basic", "bottleneck")
STEM_KINDS = ("imagenet", "cifar")
SHORTCUTS = ("A", "B", "C")
STRIDE_PLACEMENTS = ("1x1", "3x3")
# Keras' two image layouts: (height, width, channels) and (channels, height, width).
DATA_FORMATS = ("channels_last", "channels_first")

# The paper's choices for what the tables leave open: shortcut B on ImageNet and A on CIFAR
# (sections 3.3 and 4.2), and keras.applications' BN (epsilon 1.001e-5, momentum 0.9).
DEFAULT_SHORTCUT = {"imagenet": "B", "cifar": "A"}
BN_EPSILON = 1.001e-5
BN_MOMENTUM = 0.9

IMAGENET_WIDTHS = (64, 128, 256, 512)
CIFAR_WIDTHS = (16, 32, 64)

# Table 1: depth -> (block kind, blocks in conv2_x .. conv5_x).
IMAGENET_DEPTHS = {
    18: ("basic", (2, 2, 2, 2)),
    34: ("basic", (3, 4, 6, 3)),
    50: ("bottleneck", (3, 4, 6, 3)),
    101: ("bottleneck", (3, 4, 23, 3)),
    152: ("bottleneck", (3, 8, 36, 3)),
}

# Section 4.2 and Table 6: the n of each published 6n+2 net.
CIFAR_DEPTHS = {20: 3, 32: 5, 44: 7, 56: 9, 110: 18, 1202: 200}
# The plain CIFAR nets of section 4.2 (Fig. 6 left, and plain-110 of its caption).
PLAIN_CIFAR_DEPTHS = (20, 32, 44, 56, 110)


@dataclasses.dataclass(frozen=True)
class NetSpec:
    """The architecture of one network: what varies between the paper's nets."""

    block: str
    blocks_per_stage: tuple[int, ...]
    widths: tuple[int, ...]
    stem: str

    def __post_init__(self):
        if self.block not in BLOCK_KINDS:
            raise ValueError(f"block={self.block!r} is not one of {BLOCK_KINDS}")
        if self.stem not in STEM_KINDS:
            raise ValueError(f"stem={self.stem!r} is not one of {STEM_KINDS}")
        if len(self.blocks_per_stage) != len(self.widths):
            raise ValueError(
                f"blocks_per_stage={self.blocks_per_stage} and widths={self.widths} must have one entry per stage"
            )
        if any(b < 1 for b in self.blocks_per_stage):
            raise ValueError(f"blocks_per_stage={self.blocks_per_stage}: each must be >= 1")

    @property
    def expansion(self) -> int:
        """Output channels of a block over its width (4 for bottlenecks, section 4.1)."""
        return 4 if self.block == "bottleneck" else 1

    @property
    def downsampling(self) -> int:
        """Total stride from input to the last feature map; the smallest usable input."""
        stem_stride = 4 if self.stem == "imagenet" else 1
        return stem_stride * 2 ** (len(self.widths) - 1)

    @property
    def depth(self) -> int:
        """Weighted layers counted as the paper counts them (convs in blocks + stem + fc)."""
        per_block = 3 if self.block == "bottleneck" else 2
        return per_block * sum(self.blocks_per_stage) + 2


def imagenet_spec(depth: int) -> NetSpec:
    """The Table 1 network of this depth."""
    if depth not in IMAGENET_DEPTHS:
        raise ValueError(f"depth={depth!r} is not an ImageNet depth of Table 1; allowed: {sorted(IMAGENET_DEPTHS)}")
    block, blocks = IMAGENET_DEPTHS[depth]
    return NetSpec(block, blocks, IMAGENET_WIDTHS, "imagenet")


def cifar_spec(n: int) -> NetSpec:
    """The section 4.2 network with 6n+2 layers: n basic blocks on each of 3 map sizes."""
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise ValueError(f"n={n!r} must be an integer >= 1 (depth 6n+2)")
    return NetSpec("basic", (n, n, n), CIFAR_WIDTHS, "cifar")


def in_layout(shape, data_format):
    """A (height, width, channels) image shape as `data_format` orders it."""
    if shape is None or data_format == "channels_last":
        return shape
    height, width, channels = shape
    return (channels, height, width)


def as_height_width_channels(shape, data_format):
    """A `data_format`-ordered image shape as (height, width, channels): the records' order."""
    if shape is None or data_format == "channels_last":
        return shape
    channels, height, width = shape
    return (height, width, channels)


def cifar_n_for_depth(depth: int) -> int:
    """n of a 6n+2 depth, or a ValueError naming the valid depths."""
    if not isinstance(depth, int) or depth < 8 or (depth - 2) % 6:
        raise ValueError(f"depth={depth!r} is not 6n+2 for an integer n >= 1 (e.g. 20, 32, 44, 56, 110)")
    return (depth - 2) // 6
