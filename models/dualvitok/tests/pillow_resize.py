"""Resize RGB images with Pillow for the `pillow_sweep` test (the reference side).

Usage: pillow_resize.py CASES OUTPUT

CASES holds records of: u8 filter (0 = BICUBIC, 1 = LANCZOS), four u32 little-endian sizes
(in_w, in_h, out_w, out_h), then in_w * in_h * 3 bytes of RGB. OUTPUT receives, for each
record in order, the out_w * out_h * 3 bytes of `Image.resize((out_w, out_h), filter)`.
Prints the Pillow version on stdout.
"""

import struct
import sys

import PIL
from PIL import Image

FILTERS = {0: Image.Resampling.BICUBIC, 1: Image.Resampling.LANCZOS}
HEADER = struct.Struct("<BIIII")


def main(cases_path, output_path):
    with open(cases_path, "rb") as f:
        data = f.read()
    offset = 0
    with open(output_path, "wb") as out:
        while offset < len(data):
            kind, in_w, in_h, out_w, out_h = HEADER.unpack_from(data, offset)
            offset += HEADER.size
            size = in_w * in_h * 3
            image = Image.frombytes("RGB", (in_w, in_h), data[offset : offset + size])
            offset += size
            out.write(image.resize((out_w, out_h), FILTERS[kind]).tobytes())
    print(PIL.__version__)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
