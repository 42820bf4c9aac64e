"""Pictures of digits (drawings, scans, phone photos) read and prepared as MNIST's digits were,
for train_mnist.py --predict; each picture that cannot be used is refused in one DataError line."""

import dataclasses
import os
import sys
import warnings
from typing import Optional

import numpy as np

from mnist_csv import DataError, check_regular_file, load_mnist_csv

# MNIST would have made of it, keeping every step to look at; read_brightness reads a picture
# file (refusing what is not one, or is too large, before decoding it); read_image does both,
# exactly as --predict does; read_to_predict reads --predict's paths: one CSV file, or images
# and folders of them, each picture refused on its own.

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".gif", ".bmp", ".webp", ".tif", ".tiff")
LUMA = np.array([0.299, 0.587, 0.114])     # brightness of red, green, blue (ITU-R 601, as Pillow)
MAX_PICTURE_PIXELS = 50_000_000   # larger pictures are refused before decoding (8,000 x 6,000
                                  # fits); reading one at the limit peaks near 0.5 GB
DECODED_SIDE = 2000          # pixels: a decoded picture is reduced to this longer side at once
WORKING_SIDE = 1000          # pixels: a photo is shrunk to this longer side before preparation
ANALYSIS_SIDE = 80           # pixels: the page and its lighting are judged at this longer side
PAGE_SCALE = 0.4             # ink is narrower than this share of the picture's longer side
SHEET_SCALE = 0.08           # a sheet of paper, or the desk around it, is wider than this


def is_image_name(path):
    return path.lower().endswith(IMAGE_SUFFIXES)


def _resized(array, width, height):
    """A 2-D float array resampled to width x height with Pillow's Lanczos filter, which
    averages many pixels into one when shrinking (anti-aliasing) and interpolates smoothly
    when enlarging."""
    from PIL import Image
    image = Image.fromarray(array.astype(np.float32))
    return np.asarray(image.resize((width, height), Image.Resampling.LANCZOS), dtype=np.float64)


def _reduced(image):
    """A decoded picture with more pixels than preparation uses, reduced (averaging blocks of
    pixels) to at most 2,000 pixels a side while it still has 1-4 bytes a pixel: the float
    arrays made from it stay small, whatever the picture's shape."""
    factor = -(-max(image.size) // DECODED_SIDE)          # ceiling division
    if factor <= 1:
        return image
    if image.mode in ("1", "P") or image.mode.startswith("I;"):   # modes reduce does not take
        image = image.convert({"1": "L", "P": "RGBA"}.get(image.mode, "I"))
    return image.reduce(factor)


def _brightness(image):
    """Every pixel's brightness as a float, from any mode: RGB, palette, 16-bit, with alpha..."""
    from PIL import ImageOps
    image = ImageOps.exif_transpose(_reduced(image))   # a phone photo: turned as it was held
    if image.mode in ("RGBA", "LA", "PA", "La", "RGBa") or "transparency" in image.info:
        # See-through pixels show the page behind them. Drawing apps save dark strokes on a
        # transparent page, so put the image on a page that contrasts with what is drawn.
        rgba = np.asarray(image.convert("RGBA"), dtype=np.float64) / 255
        colour, opacity = rgba[..., :3] @ LUMA, rgba[..., 3]
        drawn = opacity > 0.5
        page = 1.0 if not drawn.any() or colour[drawn].mean() < 0.5 else 0.0
        return opacity * colour + (1 - opacity) * page
    return np.asarray(image.convert("F"), dtype=np.float64)   # "F": floats, any bit depth


def _shifted_extreme(array, radius, pick, extend="edge"):
    """The max (pick=np.maximum) or min over a (2r+1) x (2r+1) square around each pixel: two
    passes of 2r+1 shifted copies (rows, then columns). Beyond the picture's edge its edge
    pixels are repeated (extend="edge") or its slopes continued (extend="slope"), so that
    light that falls off towards an edge is followed to the edge."""
    options = {"mode": "reflect", "reflect_type": "odd"} if extend == "slope" else {"mode": "edge"}
    for axis in (0, 1):
        padding = [(0, 0), (0, 0)]
        padding[axis] = (radius, radius)
        padded, length = np.pad(array, padding, **options), array.shape[axis]
        result = np.take(padded, range(0, length), axis=axis)
        for shift in range(1, 2 * radius + 1):
            result = pick(result, np.take(padded, range(shift, shift + length), axis=axis))
        array = result
    return array


def _closing(array, radius):
    """Morphological closing: dark features narrower than 2r+1 pixels filled with what is
    around them (the page behind the ink), larger shapes kept where they are."""
    return _shifted_extreme(_shifted_extreme(array, radius, np.maximum, "slope"), radius,
                            np.minimum, "slope")


def _opening(array, radius):
    """Morphological opening: light features narrower than 2r+1 pixels taken away."""
    return -_closing(-array, radius)


def _otsu(values, bins=64):
    """Otsu's threshold: the value that splits `values` into the two most distinct classes."""
    counts, edges = np.histogram(values, bins=bins)
    centres = (edges[:-1] + edges[1:]) / 2
    weight = np.cumsum(counts)
    mean = np.cumsum(counts * centres)
    total, total_mean = weight[-1], mean[-1]
    with np.errstate(divide="ignore", invalid="ignore"):
        between = (total_mean * weight - mean * total) ** 2 / (weight * (total - weight))
    between = np.nan_to_num(between[:-1], nan=-1.0)
    return edges[1 + int(between.argmax())] if between.max() > 0 else edges[-1]


def _without_specks(inked):
    """Keep only the inked pixels that have an inked neighbour (of the 8 around them)."""
    padded = np.pad(inked, 1)
    height, width = inked.shape
    neighbours = sum(padded[1 + dy:1 + dy + height, 1 + dx:1 + dx + width]
                     for dy in (-1, 0, 1) for dx in (-1, 0, 1) if dy or dx)
    return inked & (neighbours > 0)


def _without_rules(ink, noise):
    """Notebook rules are not ink. A rule is a thin line of faint ink across the whole page,
    so the median of its row (or column) is well above the page's noise, which no stroke of a
    digit that covers less than half of the row can do. Three or more of them (lined or
    squared paper), or one much thinner than the picture (a margin), are taken away: each row's
    median is subtracted from it, so that a stroke crossing a rule stays."""
    ink = ink.copy()
    for turned in (False, True):                  # rows (horizontal rules), then columns
        view = ink.T if turned else ink
        medians = np.median(view, axis=1)
        ruled = medians > max(3 * noise, 0.05)
        starts = np.flatnonzero(np.diff(ruled.astype(np.int8), prepend=0) == 1)
        stops = np.flatnonzero(np.diff(ruled.astype(np.int8), append=0) == -1) + 1
        length = view.shape[0]
        thin = max(3, round(0.02 * length)) if len(starts) >= 3 else 0.02 * length
        for start, stop in zip(starts, stops):
            if stop - start <= thin:
                view[start:stop] = np.clip(view[start:stop] - medians[start:stop, None], 0, 1)
    return ink


def _without_strays(inked):
    """Ink apart from the digit is not the digit: a group of rows (or columns) at an edge of
    the ink, cut off from the rest by empty ones and holding under 2% of the ink (a speck of
    dust, noise in a dark corner, an edge of the sheet), is taken away."""
    inked = inked.copy()
    for axis in (1, 0):                           # groups of rows, then of columns
        profile = inked.sum(axis=axis)
        total = profile.sum()
        while True:
            filled = np.flatnonzero(profile)
            groups = np.split(filled, np.flatnonzero(np.diff(filled) > 1) + 1)
            if len(groups) < 2:
                break
            smaller = min(groups[0], groups[-1], key=lambda group: profile[group].sum())
            if profile[smaller].sum() >= 0.02 * total:
                break
            profile[smaller] = 0
            if axis == 1:
                inked[smaller] = False
            else:
                inked[:, smaller] = False
    return inked


@dataclasses.dataclass
class Preparation:
    """Every step of preparing one picture (see prepare), to look at one by one."""
    gray: np.ndarray             # brightness stretched to 0..1, at most 1,000 pixels a side
                                 # (turned around, 1 - brightness, for a dark page)
    light_page: bool             # dark ink on a light page, or (False) light ink on a dark one
    page: np.ndarray             # the page's brightness behind each pixel: its lighting, shadows
    sheet: Optional[np.ndarray]  # where a sheet of paper lies on a darker surface, or None
    ink: np.ndarray              # how far each pixel is from its page towards the ink, 0..1
    inked: np.ndarray            # the pixels taken for ink (bool)
    digit: Optional[np.ndarray]  # the 784 pixels MNIST would have made, or None: no ink found


def _split(small):
    """Otsu's split of a picture into its dark and light pixels: (dark mask, how dark the dark
    ones are against the light ones, the share of each side, top, bottom, left, right, that is
    dark)."""
    dark = small < _otsu(small)
    sides = np.array([dark[0].mean(), dark[-1].mean(), dark[:, 0].mean(), dark[:, -1].mean()])
    if dark.all() or not dark.any():
        return dark, 1.0, sides
    return dark, small[dark].mean() / max(small[~dark].mean(), 1e-6), sides


def _sheet(small):
    """Where a light sheet of paper lies on a darker surface (a desk), as a mask of the small
    picture, or None. The picture's broad shapes (strokes of ink taken away, light or dark)
    are split into dark and light: a sheet is a large light shape, much lighter than the dark
    one, which takes up most of the border and three of its corners, and it is mostly paper
    (not thick light strokes around dark holes, as a bold digit on a dark page is)."""
    radius = max(1, round(SHEET_SCALE * max(small.shape) / 2))
    dark, contrast, sides = _split(_opening(_closing(small, radius), radius))
    if contrast > 0.6 or sides.mean() < 0.6 or not 0.3 <= (~dark).mean() <= 0.85:
        return None                     # a shadow, a page seen whole, or a digit cropped tight
    ends = (slice(0, radius), slice(-radius, None))
    corners = sum(dark[rows, columns].mean() > 0.5 for rows in ends for columns in ends)
    inked = (small < _otsu(small))[~dark].mean()
    if corners < 3 or inked > 0.25:
        return None
    return _shifted_extreme((~dark).astype(np.uint8), 2, np.minimum).astype(bool)


def _resized_mask(mask, width, height):
    from PIL import Image
    image = Image.fromarray(mask.astype(np.uint8) * 255)
    return np.asarray(image.resize((width, height), Image.Resampling.NEAREST)) > 127


def prepare(brightness, background="auto"):
    """Make a picture of one digit into the 784 pixels MNIST would have made of it, keeping
    every step (a Preparation; its .digit is the result, None when no ink was found).

    brightness: 2-D array (height, width), any scale. background: "auto" (decide from the
    picture), "light" (dark ink on a light page) or "dark" (light ink on a dark page).

    >>> picture = np.full((60, 40), 230.0)           # a light page...
    >>> picture[10:50, 18:23] = 40                   # ...with a dark stroke: a 1
    >>> steps = prepare(picture)
    >>> steps.light_page, steps.digit.shape, float(steps.digit.max())
    (True, (784,), 1.0)
    """
    brightness = np.asarray(brightness, dtype=np.float64)
    # 1. A phone photo has far more pixels than a 20-pixel digit needs: shrink it so its
    #    longer side is at most 1,000 pixels (faster, and averaging smooths the noise).
    height, width = brightness.shape
    if max(height, width) > WORKING_SIDE:
        scale = WORKING_SIDE / max(height, width)
        brightness = _resized(brightness, max(1, round(width * scale)),
                              max(1, round(height * scale)))
        height, width = brightness.shape
    # 2. Stretch the picture's own darkest..lightest to 0..1, whatever its bit depth or exposure.
    low, high = brightness.min(), brightness.max()
    gray = (brightness - low) / (high - low) if high > low else np.zeros_like(brightness)
    # 3. Page and ink, judged on a small copy of the whole picture (not its border, which a
    #    tight crop fills with ink). A light sheet of paper on a darker desk: the digit is on
    #    the sheet. Otherwise the page is light (dark ink on paper, a drawing app) unless most
    #    of the picture and three of its four sides are much darker than the rest (light ink
    #    on a dark page: a chalkboard, MNIST itself; a tight crop of a dark 1 is dark at the
    #    top and bottom only). --background overrides the guess.
    scale = min(1.0, ANALYSIS_SIDE / max(height, width))
    small_size = max(1, round(width * scale)), max(1, round(height * scale))
    small = _resized(gray, *small_size) if scale < 1 else gray
    sheet = _sheet(small) if background != "dark" else None
    if background == "auto" and sheet is None:
        dark, contrast, sides = _split(small)
        light_page = not (dark.mean() > 0.5 and (sides > 0.5).sum() >= 3 and contrast < 0.6)
    else:
        light_page = background != "dark"
    # 4. The page behind the ink: what is left when every feature narrower than ink can be
    #    (PAGE_SCALE) is filled in with what surrounds it (a morphological closing). It
    #    follows shadows and the lighting across the page. From here on the ink is dark on a
    #    light page: a dark page's picture is turned around.
    if not light_page:
        gray, small = 1 - gray, 1 - small
    if sheet is not None:                # the desk is no part of the page: make it paper
        small = np.where(sheet, small, np.median(small[sheet]))
    behind = _closing(small, max(1, round(PAGE_SCALE * max(small.shape) / 2)))
    # 5. Even out the lighting: each pixel's ink is how much darker it is than the page behind
    #    it, as a share of that page's brightness (a shadow dims page and ink alike).
    page = np.clip(_resized(behind, width, height), 0, 1) if scale < 1 else behind
    ink = np.clip((page - gray) / np.maximum(page, 0.05), 0, 1)
    if sheet is not None:
        sheet = _resized_mask(sheet, width, height) if scale < 1 else sheet
        ink[~sheet] = 0
    # 6. Noise. Paper grain, camera noise and JPEG artefacts make the page vary; neighbouring
    #    pixels show by how much: their typical difference, across rows or down columns,
    #    whichever is smaller (the edges of strokes sway it less: in a tight crop of a 1 most
    #    pixels are on an edge across, few down). Ink fainter than five times that noise,
    #    than a tenth of the page, and than half of where Otsu's method splits the picture into
    #    page and ink, is page and becomes 0 as MNIST's background is. A lone pixel above it is
    #    a speck, since ink comes in strokes; long thin lines across the picture are a
    #    notebook's rules.
    typical = min((np.median(np.abs(np.diff(gray, axis=axis))) for axis in (0, 1)
                   if gray.shape[axis] > 1), default=0.0)
    noise = typical / 0.6745 / np.sqrt(2) / max(np.median(page), 0.05)
    ink = _without_rules(ink, noise)
    split = _otsu(ink[ink > 0.02]) if np.count_nonzero(ink > 0.02) > 1 else 1.0
    inked = _without_strays(_without_specks(ink > max(5 * noise, 0.1, split / 2)))
    steps = Preparation(gray, light_page, page, sheet, ink, inked, None)
    if not inked.any():
        return steps
    # 7. Crop to the ink's bounding box, then scale it so that its longer side is 20 pixels,
    #    keeping the aspect ratio. Resampling averages the many pixels of a stroke's edge into
    #    grey ones: MNIST's anti-aliasing. Its strokes peak at full ink (255), so do ours.
    rows, columns = np.flatnonzero(inked.any(axis=1)), np.flatnonzero(inked.any(axis=0))
    box = np.where(inked, ink, 0)[rows[0]:rows[-1] + 1, columns[0]:columns[-1] + 1]
    box = np.minimum(box / np.percentile(box[box > 0], 90), 1)   # full ink: most of a stroke
    scale = 20 / max(box.shape)
    small = _resized(box, max(1, round(box.shape[1] * scale)), max(1, round(box.shape[0] * scale)))
    small = np.clip(small, 0, None)                 # Lanczos overshoots a little at sharp edges
    small /= small.max()                            # [0, 1], full ink at 1
    # 8. Paste it into 28 x 28 so that its centre of mass sits at the centre, pixel (14, 14),
    #    moving it by whole pixels as MNIST did.
    ys, xs = np.indices(small.shape)
    mass = small.sum()
    top = round(14 - (ys * small).sum() / mass)
    left = round(14 - (xs * small).sum() / mass)
    top, left = min(max(top, 0), 28 - small.shape[0]), min(max(left, 0), 28 - small.shape[1])
    digit = np.zeros((28, 28), dtype=np.float32)
    digit[top:top + small.shape[0], left:left + small.shape[1]] = small
    steps.digit = digit.ravel()
    return steps


def prepare_digit(brightness, background="auto"):
    """The 784 pixels MNIST would have made of a picture of one digit (float32 in [0, 1],
    light ink on black), or None when there is no ink to find; see prepare for the steps."""
    return prepare(brightness, background).digit


def read_brightness(path):
    """The picture in an image file as brightness: a 2-D float64 array, at most 2,000 pixels a
    side. A file that is not a picture Pillow can read, or a picture of more than 50 million
    pixels (a decompression bomb can claim billions in a few bytes), is refused with a
    DataError before it is decoded."""
    from PIL import Image, UnidentifiedImageError
    check_regular_file(path, expected="an image")
    too_big = (f"{path}: a picture of more than {MAX_PICTURE_PIXELS:,} pixels; expected a "
               f"photo or drawing of one digit (shrink it first)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                width, height = image.size
                if width * height > MAX_PICTURE_PIXELS:
                    raise DataError(f"{too_big}; it is {width:,} x {height:,}")
                return _brightness(image)
    except UnidentifiedImageError:
        raise DataError(f"{path}: not an image file Pillow can read") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise DataError(too_big) from None
    except (OSError, ValueError, SyntaxError, EOFError) as error:
        raise DataError(f"{path}: could not be read as an image ({error})") from None


def read_image(path, background="auto"):
    """An image file (PNG, JPEG, ...) of one digit as the 784 pixels MNIST would have made of
    it, exactly as --predict reads it; raises DataError when it cannot (see prepare).

    >>> digit = read_image("my_digit.png")                # doctest: +SKIP
    >>> net.predict(digit[None]).argmax()                 # doctest: +SKIP
    """
    digit = prepare(read_brightness(path), background).digit
    if digit is None:
        hint = ("try --background light or dark" if background == "auto"
                else "try another --background, or --background auto")
        raise DataError(f"{path}: found no ink, nothing that stands out from the page; "
                        f"expected a picture of one digit ({hint}, or crop the picture "
                        f"closer to the digit)")
    return digit


def predicts_images(paths):
    """--predict takes images (files or folders of them), or else one CSV file."""
    return len(paths) > 1 or os.path.isdir(paths[0]) or is_image_name(paths[0])


def image_files(paths):
    """The files --predict reads as pictures: each path given, and each file in a folder given
    (in name order). A folder's hidden files (dotfiles: .DS_Store, or the ._name.png a Mac
    leaves beside name.png) and its subfolders are passed over; its other files are all kept,
    pictures or not, so that read_to_predict names each one that is not. A folder without a
    single picture is refused at once: there would be nothing to predict."""
    files = []
    for path in paths:
        if not os.path.isdir(path):
            files.append(path)
            continue
        found = sorted(entry.path for entry in os.scandir(path)
                       if entry.is_file() and not entry.name.startswith("."))
        if not any(is_image_name(name) for name in found):
            raise DataError(f"{path}: a folder without pictures ({', '.join(IMAGE_SUFFIXES)})")
        files += found
    return files


def check_picture_name(path):
    """Refuse a file whose name is not a picture's (notes.txt in a folder of digits)."""
    if not is_image_name(path):
        suffix = os.path.splitext(path)[1]
        found = f"{suffix} is" if suffix else "a name without a suffix is"
        hint = ("; --predict reads a CSV file only when it is the only path given"
                if ".csv" in path.lower() else "")
        raise DataError(f"{path}: not a picture: {found} not one of "
                        f"{', '.join(IMAGE_SUFFIXES)}{hint}")


def read_to_predict(paths, background="auto"):
    """--predict's input, read and checked before any training: (CSV pixels or None, the
    paths of the pictures read, their prepared digits, the paths of the files refused).
    Every file is read: each one refused (not a picture, no ink, ...) is named in one line on
    standard error as it comes, and the others are kept."""
    if not paths:
        return None, [], [], []
    if not predicts_images(paths):
        return load_mnist_csv(paths[0], labelled=False)[0], [], [], []
    read, digits, refused = [], [], []
    for path in image_files(paths):
        try:
            check_picture_name(path)
            digits.append(read_image(path, background))
            read.append(path)
        except DataError as error:
            print(f"error: {error}", file=sys.stderr)
            refused.append(path)
    return None, read, digits, refused



def refused_summary(refused, files):
    """The closing line of a run that refused files: how many, and which."""
    return (f"refused {len(refused):,} of {files:,} file{'' if files == 1 else 's'}: "
            + ", ".join(refused))
