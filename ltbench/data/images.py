"""Opening image files that come from elsewhere: a header that claims a huge image (a decompression bomb: a few
kilobytes of PNG that decode to gigabytes) is refused before any pixel is decoded.

The limit is Pillow's own, ``PIL.Image.MAX_IMAGE_PIXELS`` (89,478,485 pixels by default, about 9,459 x 9,459: a
quarter GiB as 24-bit RGB). Pillow only warns between that and twice that and decodes anyway; ltbench refuses
from the limit on. The data sets ltbench reads are far inside it: CIFAR and the digits are 32 x 32 or smaller,
iNaturalist 2018's images are resized to at most 800 pixels a side, Places365's to 256 (512 on the short side
in its high-resolution release), and ImageNet's web photos average about 470 x 390; even a 60-megapixel
camera's frame fits. To read larger images, set ``PIL.Image.MAX_IMAGE_PIXELS`` (a plugin can)."""
from __future__ import annotations

import re
import warnings
from pathlib import Path

from ..errors import DataError


class ImageTooLarge(DataError):
    """An image whose header claims more pixels than the limit (refused before decoding); ``detail`` is the
    message after the file's name, for callers that add where the file was listed."""

    def __init__(self, path, detail: str):
        super().__init__(f"image {path} {detail}")
        self.path, self.detail = path, detail


def open_image(path: str | Path):
    """``PIL.Image.open(path)`` (header read, nothing decoded yet: Pillow checks the size there), or
    ImageTooLarge naming the file, its pixels and the limit; Pillow's other errors (OSError,
    UnidentifiedImageError) pass through."""
    from PIL import Image

    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)  # Pillow's 1x-2x band: refused too
        try:
            image = Image.open(path)
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            claimed = re.search(r"\((\d+) pixels\)", str(exc))
            size = f"{int(claimed.group(1)):,} pixels" if claimed else "too many pixels"
            raise ImageTooLarge(path, f"claims {size}, over the limit of {Image.MAX_IMAGE_PIXELS:,} pixels "
                                      f"(Pillow's MAX_IMAGE_PIXELS): a decompression bomb or a mistaken file; "
                                      f"replace it with the real image") from None
    return image
