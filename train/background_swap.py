"""Background swap: training copies whose background carries no class, so the head has to use the cells.

On the Taleqani data each class was photographed as its own series, and a field's background alone names
its class (README "What the maps show"): a head trained on the fields as they are has no reason to look at
the white cells. With cell masks (the Segmented set: the same file names, the cells kept and the rest
black) each training image also gets `copies` composites: its own white cells pasted onto the cell-free
background of a training image of ANOTHER class, drawn at random. In a composite the background names a
wrong class as often as not, so only the cells name the right one.

The cells of a field are the mask's pixels (brighter than CELL_LEVEL in any channel, small gaps closed)
together with those of the stain mask of the field itself (purple stain above Otsu's threshold), because
the Segmented set's colour threshold misses most pale violet Pro cells; both grown by a few pixels so no
rim of a cell is left behind. The donor's cells are painted in the median colour of the rest of its
field. Composites are drawn from a generator seeded per image (seed, index), so the same settings give
the same composites and their features cache like the other training views (train.view_features).
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

from allx.errors import DataError, ImageError, UsageError
from allx.images import load_image

CELL_LEVEL = 40  # Segmented sets the background to black: a pixel brighter than this in any channel is cell
CLOSE_PX = 5  # closing (max then min filter) that fills the dark specks the segmentation left inside a cell
GROW_PX = 9  # max filter that grows a cell mask, so no rim of a cell is left on a background
STAIN_FLOOR = 30.0  # purple excess below which nothing is a cell: lavender red cells (Pre) reach about 25
STAIN_SPECK = 150  # pixels: smaller purple objects are platelets or debris, not a white cell (~0.3% of 224 x 224)
DEFAULT_COPIES = 2
MAX_COPIES = 8
SWAP_STREAM = 1  # a generator stream of its own: adding composites leaves the augmentation's draws as they were


def segmented_cells(segmented: np.ndarray) -> np.ndarray:
    """The cells of a Segmented image (uint8 RGB, black around the cells) as a boolean mask."""
    kept = Image.fromarray(((segmented.max(axis=-1) > CELL_LEVEL) * 255).astype(np.uint8))
    closed = kept.filter(ImageFilter.MaxFilter(CLOSE_PX)).filter(ImageFilter.MinFilter(CLOSE_PX))
    return np.asarray(closed) > 127


def cell_mask(path: Path, size: tuple[int, int]) -> np.ndarray:
    """The cells of the Segmented image at `path`, read at `size` (height, width)."""
    return segmented_cells(load_image(path, size))


def stain_mask(pixels: np.ndarray) -> np.ndarray:
    """The white cells of a field found by their stain: purple, where red and blue exceed green by more than
    in the rest of the field (Otsu's threshold on (R + B) / 2 - G, at least STAIN_FLOOR), specks removed and
    holes filled. A second reference beside the Segmented set's colour threshold, which misses most pale
    violet Pro cells (median 1.6% of a Pro field) and keeps the rims of lavender red cells."""
    # (the train extra's scientific stack, loaded only when masks are made; submodules named in full, because
    # skimage's lazy attributes are not safe to resolve from two extraction threads at once)
    from scipy import ndimage
    from skimage.filters import threshold_otsu
    from skimage.morphology import disk, remove_small_objects

    values = np.asarray(pixels, np.float32)
    purple = (values[..., 0] + values[..., 2]) / 2 - values[..., 1]
    found = purple > max(float(threshold_otsu(purple)), STAIN_FLOOR)
    found = remove_small_objects(ndimage.binary_opening(found, disk(2)), max_size=STAIN_SPECK)
    return ndimage.binary_fill_holes(found)


def stained_regions(mask: np.ndarray, stained: np.ndarray) -> np.ndarray:
    """The stained pixels with every connected region of `mask` that holds one of them. The colour threshold
    of the Segmented set also keeps the rims of lavender red cells, which are part of a series' background;
    a region without stain is one of those, one with stain a white cell (whole, where the stain mask alone
    may miss a pale part). With no stain in the field, the mask as it is."""
    from scipy import ndimage  # (see stain_mask)

    if not stained.any():
        return mask
    regions, _ = ndimage.label(mask)
    touched = np.unique(regions[stained & mask])
    return stained | np.isin(regions, touched[touched > 0])


def grown(mask: np.ndarray, pixels: int = GROW_PX) -> np.ndarray:
    """The mask grown by a square max filter of `pixels`."""
    return np.asarray(Image.fromarray(mask.astype(np.uint8) * 255).filter(ImageFilter.MaxFilter(pixels))) > 127


def without_cells(pixels: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The field with its cells (grown by a few pixels) painted in the median colour of the rest: the
    field's background alone."""
    cells = grown(mask)
    painted = pixels.copy()
    painted[cells] = np.median(pixels[~cells], axis=0).astype(np.uint8) if (~cells).any() else 128
    return painted


def composite(source: np.ndarray, source_cells: np.ndarray, donor: np.ndarray, donor_cells: np.ndarray) -> np.ndarray:
    """The source's cells (grown by a few pixels) on the donor's background, the donor's cells painted out."""
    return np.where(grown(source_cells)[..., np.newaxis], source, without_cells(donor, donor_cells))


@dataclass(frozen=True)
class BackgroundSwap:
    """Where the cell masks are (same file names as the data) and how many composites per training image."""

    masks_dir: Path
    copies: int = DEFAULT_COPIES

    def key(self, mask_hashes: str) -> dict:
        """What changes the composites: part of the feature cache key (`mask_hashes`: the masks' contents)."""
        return {"masks": mask_hashes, "copies": self.copies, "code": code_version()}


@functools.lru_cache(maxsize=1)
def code_version() -> str:
    """A hash of this module: the masks' thresholds and the way composites are drawn all live here."""
    return hashlib.sha256(Path(__file__).read_bytes()).hexdigest()[:16]


def check_copies(copies: int) -> None:
    if not 1 <= copies <= MAX_COPIES:
        raise UsageError(f"--swap-copies: got {copies}, expected 1..{MAX_COPIES}")


def check_cell_masks(data_dir: Path, masks_dir: Path, relpaths) -> list[bool]:
    """Every image of `relpaths` has a mask of the same name and size in masks_dir (DataError naming the first
    that has not); returns which images opened, the donors composites may draw on. Headers only: fast."""
    if not Path(masks_dir).is_dir():
        raise DataError(f"--cell-masks: got {masks_dir}, expected a folder of class folders of cell masks "
                        "with the data's file names (e.g. the Segmented set)")
    opened = []
    for relpath in relpaths:
        size = header_size(Path(data_dir) / relpath)
        opened.append(size is not None)
        mask = Path(masks_dir) / relpath
        if not mask.is_file():
            raise DataError(f"--cell-masks: no mask for {relpath}: got no file {mask}, expected the cell mask "
                            "of the same name")
        mask_size = header_size(mask)
        if mask_size is None:
            raise DataError(f"--cell-masks: {mask} is not a readable image, expected the cell mask of {relpath}")
        if size is not None and mask_size != size:
            raise DataError(f"--cell-masks: {mask} is {mask_size[0]}x{mask_size[1]} pixels, expected the size "
                            f"of {relpath}, {size[0]}x{size[1]}")
    return opened


def header_size(path: Path) -> tuple[int, int] | None:
    """(width, height) from the image's header, or None when it cannot be opened."""
    try:
        with Image.open(path) as image:
            return image.size
    except (OSError, ValueError, SyntaxError):
        return None


class Composites:
    """The composites of the images of one training subset: `views(index, pixels)` gives image `index`'s."""

    def __init__(self, swap: BackgroundSwap, data_dir: Path, relpaths, labels, size: tuple[int, int],
                 seed: int, donors: list[bool]):
        self.swap, self.data_dir, self.relpaths, self.size, self.seed = swap, Path(data_dir), list(relpaths), size, seed
        self.labels = np.asarray(labels)
        self.donors = np.flatnonzero(np.asarray(donors, dtype=bool))

    @property
    def copies(self) -> int:
        return self.swap.copies

    def views(self, index: int, pixels: np.ndarray) -> list[np.ndarray]:
        """`copies` composites of image `index` (its uint8 pixels at the training size), each on the background
        of a different donor of another class where there are enough. An image whose masks find no cell gives
        itself in their place: a background with nothing of the class would teach a wrong class."""
        cells = self.cells(index, pixels)
        others = self.donors[self.labels[self.donors] != self.labels[index]]
        if not cells.any() or not len(others):
            return [pixels] * self.copies
        rng = np.random.default_rng([self.seed, index, SWAP_STREAM])
        picks = rng.choice(others, size=self.copies, replace=len(others) < self.copies)
        return [self.on_background_of(int(donor), pixels, cells) for donor in picks]

    def on_background_of(self, donor: int, pixels: np.ndarray, cells: np.ndarray) -> np.ndarray:
        background = load_image(self.data_dir / self.relpaths[donor], self.size)
        return composite(pixels, cells, background, self.cells(donor, background))

    def cells(self, index: int, pixels: np.ndarray) -> np.ndarray:
        """Image `index`'s white cells: its stain mask, with the regions of its cell mask that touch it."""
        path = Path(self.swap.masks_dir) / self.relpaths[index]
        try:
            mask = segmented_cells(load_image(path, self.size))
        except ImageError as err:
            raise DataError(f"--cell-masks: {err}, expected the cell mask of {self.relpaths[index]}") from None
        return stained_regions(mask, stain_mask(pixels))
