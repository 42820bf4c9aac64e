"""Pictures of digits (drawings, scans, phone photos) read and prepared as MNIST's digits were,
for --predict: prepare keeps every step; read_brightness reads a file, refusing what is not a
picture or is too large before decoding it; read_picture does both (read_image: its digit);
read_to_predict reads --predict's paths, each picture that cannot be used refused in one line."""

import dataclasses
import importlib.util
import os
import sys
import warnings
from typing import Optional

import numpy as np

from mnist_csv import DataError, check_regular_file, load_mnist_csv, printable

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".gif", ".bmp", ".webp", ".tif", ".tiff")
FORMATS = ["PNG", "JPEG", "GIF", "BMP", "WEBP", "TIFF"]   # the only decoders Pillow may use,
                                  # whatever a file's name: never PostScript (Ghostscript) & co.
LUMA = np.array([0.299, 0.587, 0.114])     # brightness of red, green, blue (ITU-R 601, as Pillow)
MAX_PICTURE_PIXELS = 50_000_000   # larger pictures are refused before decoding (8,000 x 6,000
                                  # fits); reading one at the limit peaks near 0.5 GB
DECODED_SIDE = 2000          # pixels: a decoded picture is reduced to this longer side at once
WORKING_SIDE = 1000          # pixels: a photo is shrunk to this longer side before preparation
ANALYSIS_SIDE = 80           # pixels: the page and its lighting are judged at this longer side
PAGE_SCALE = 0.4             # ink is narrower than this share of the picture's longer side


def is_image_name(path):
    return path.lower().endswith(IMAGE_SUFFIXES)


def _brightness(image):
    """Every pixel's brightness as a float, from any mode (RGB, palette, 16-bit, with alpha...),
    turned as the phone was held. A picture with more pixels than preparation uses is first
    reduced (averaging blocks of pixels) to at most 2,000 pixels a side while it still has 1-4
    bytes a pixel: the float arrays made from it stay small, whatever the picture's shape."""
    from PIL import ImageOps
    factor = -(-max(image.size) // DECODED_SIDE)          # ceiling division
    if factor > 1:
        if image.mode in ("1", "P") or image.mode.startswith("I;"):   # modes reduce does not take
            image = image.convert({"1": "L", "P": "RGBA"}.get(image.mode, "I"))
        image = image.reduce(factor)
    image = ImageOps.exif_transpose(image)
    if image.mode in ("RGBA", "LA", "PA", "La", "RGBa") or "transparency" in image.info:
        # See-through pixels show the page behind them. Drawing apps save dark strokes on a
        # transparent page, so put the image on a page that contrasts with what is drawn.
        rgba = np.asarray(image.convert("RGBA"), dtype=np.float64) / 255
        colour, opacity = rgba[..., :3] @ LUMA, rgba[..., 3]
        drawn = opacity > 0.5
        page = 1.0 if not drawn.any() or colour[drawn].mean() < 0.5 else 0.0
        return opacity * colour + (1 - opacity) * page
    return np.asarray(image.convert("F"), dtype=np.float64)   # "F": floats, any bit depth


def _without_rules(ink):
    """Notebook rules are not ink. A rule is a thin line of faint ink across the whole page
    (lined or squared paper, a margin), so the median of its row (or column) stands above
    those of the rows beside it, which no stroke of a digit that covers less than half of
    the row can do; each such row's median is taken away from it, so a stroke crossing it
    stays. The faint edge of a dark stroke is no rule. (`ink` is changed in place.)"""
    from scipy.ndimage import maximum_filter1d, minimum_filter1d
    for view in (ink, ink.T):                     # rows, then columns
        medians = np.median(view, axis=1)
        width = 2 * round(0.02 * len(medians)) + 1          # a rule is thinner than this
        ridge = medians - minimum_filter1d(medians, width)
        view -= np.where(maximum_filter1d(medians, width) < 0.5, ridge, 0)[:, None]
    return np.clip(ink, 0, 1)


@dataclasses.dataclass
class Preparation:
    """Every step of preparing one picture (see prepare), to look at one by one."""
    gray: np.ndarray             # brightness stretched to 0..1, at most 1,000 pixels a side
                                 # (turned around, 1 - brightness, for a dark page)
    light_page: bool             # dark ink on a light page, or (False) light ink on a dark one
    page: np.ndarray             # the page's brightness behind each pixel: its lighting, shadows
    ink: np.ndarray              # how far each pixel is from its page towards the ink, 0..1
    inked: np.ndarray            # the pixels taken for ink (bool), before choosing the digit
    digit_mask: Optional[np.ndarray] = None   # the ink kept as the digit (bool), or None
    box: Optional[tuple] = None  # (top, left, bottom, right) of the digit in `gray`, or None
    several: bool = False        # it seems to hold more than one digit side by side ("42")
    digit: Optional[np.ndarray] = None   # the 784 pixels MNIST would have made, or None


def _light_page(small):
    """Dark ink on a light page (paper, a drawing app), unless most of the picture and three
    of its four sides are much darker than the rest (light ink on a dark page: a chalkboard,
    MNIST itself; a tight crop of a dark 1 is dark at the top and bottom only), and its
    middle 70% is so too (a desk, a thumb or dark corners around a light page are not it)."""
    from skimage.filters import threshold_otsu

    def dark_page(part):             # (a page of one brightness has no dark part)
        dark = part < threshold_otsu(part)
        sides = [dark[0].mean(), dark[-1].mean(), dark[:, 0].mean(), dark[:, -1].mean()]
        return dark.mean() > 0.5 and np.count_nonzero(np.array(sides) > 0.5) >= 3 \
            and part[dark].mean() < 0.6 * part[~dark].mean()

    middle = small[tuple(slice(round(0.15 * n), max(1, round(0.85 * n))) for n in small.shape)]
    return not (dark_page(small) and dark_page(middle))


def _middle_third(shape):
    return tuple(slice(side // 3, -(-2 * side // 3)) for side in shape)


def _thick_at_border(inked):
    """Ink far thicker than the digit's strokes (measured in the picture's middle third, where
    the digit is), away from that middle, more than half of all ink, and leaving there a
    digit's worth of strokes when taken away: a thumb, the desk beyond the sheet, even where
    a stroke touches it. What an opening wider than the strokes leaves, and two strokes'
    width around it (the ragged edge of the desk)."""
    from scipy.ndimage import distance_transform_edt
    from skimage.measure import label, regionprops
    from skimage.morphology import isotropic_dilation, isotropic_opening
    middle = _middle_third(inked.shape)
    if not inked[middle].any():
        return np.zeros_like(inked)
    stroke = 4 * distance_transform_edt(inked)[middle][inked[middle]].mean()   # its width
    thick = label(isotropic_opening(inked, 0.75 * stroke))
    away = np.isin(thick, [part.label for part in regionprops(thick) if part.label not in
                           thick[middle] and 2 * part.area > np.count_nonzero(inked)])
    rest = label(inked & ~away)
    digit = any(group.area > 10 * stroke ** 2 and group.label in rest[middle]
                for group in regionprops(rest))
    return isotropic_dilation(away, 2 * stroke) if away.any() and digit else np.zeros_like(inked)


def _digit(inked, ink):
    """The groups of connected ink (8-neighbours) a person takes for the digit: (mask, several).
    Judged against the main stroke, the largest group that is not outside (at the border, or
    spanning most of the picture, without reaching its middle third): specks much smaller
    than it go; so do frames around it (a printed box), groups outside that are larger,
    thicker or darker than it (a thumb, the desk beyond the sheet), straight lines under it
    (an underline, a ruled line) and groups far from it. Two digits side by side ("42"): the
    groups beside the larger one go, and `several` says so."""
    from skimage.measure import label, regionprops
    labels = label(inked & ~_thick_at_border(inked), connectivity=2)
    groups = [g for g in regionprops(labels, intensity_image=ink) if g.area > 1]
    if not groups:                   # lone pixels are specks, not strokes
        return None, False
    height, width = inked.shape
    middle = set(np.unique(labels[_middle_third(inked.shape)]))

    def outside(g):
        top, left, bottom, right = g.bbox
        return g.label not in middle and (min(top, left) == 0 or bottom == height
                                          or right == width or bottom - top > 0.75 * height
                                          or right - left > 0.75 * width)

    def thickness(g):                # twice the area per unit of length: a stroke's width
        return 2 * g.area / max(g.perimeter, 1)

    def around(g, other):            # other's box within g's box
        return all(np.subtract(other.bbox, g.bbox) * (1, 1, -1, -1) >= 0)

    def main_of(kept):
        return max([g for g in kept if not outside(g)] or kept, key=lambda g: g.area)

    smallest = 0.01 * main_of(groups).area      # noise specks go first, all at once
    groups = [g for g in groups if g.area >= smallest]
    kept = [g for g in groups if not (
        g.area_filled > 3 * g.area and any(around(g, other) and other.area > 0.1 * g.area
                                           for other in groups if other is not g)
        and thickness(g) < 0.1 * min(g.bbox[2] - g.bbox[0], g.bbox[3] - g.bbox[1]))]
    main = main_of(kept)
    kept = [g for g in kept if g is main or not outside(g) or not (
        g.area > main.area or thickness(g) > 2 * thickness(main)
        or g.intensity_mean > 1.5 * main.intensity_mean)]
    main = main_of(kept)
    kept = [g for g in kept if not (g.axis_major_length > 5 * max(g.axis_minor_length, 1)
                                    and abs(abs(g.orientation) - np.pi / 2) < 0.35  # level,
                                    and g.bbox[0] > 1.03 * main.bbox[2] - 0.03 * main.bbox[0])]
    top, left, bottom, right = main.bbox
    size = max(bottom - top, right - left)

    def near(g):                     # within half its size; a tenth for what is outside
        reach = (0.1 if outside(g) else 0.5) * size
        return (g.bbox[0] < bottom + reach and g.bbox[2] > top - reach
                and g.bbox[1] < right + reach and g.bbox[3] > left - reach)

    kept = [g for g in kept if g.area >= 0.05 * main.area and near(g)]
    several = any((g.bbox[1] >= right or g.bbox[3] <= left) and g.area > 0.3 * main.area
                  and min(g.bbox[2], bottom) - max(g.bbox[0], top) > 0.5 * (bottom - top)
                  for g in kept)     # a group beside it, at least half as tall
    if several:                      # read the largest digit: the groups above or below it
        kept = [g for g in kept if g.bbox[1] < right and g.bbox[3] > left]
    return np.isin(labels, [g.label for g in kept]), several


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
    from scipy.ndimage import center_of_mass
    from skimage.exposure import rescale_intensity
    from skimage.filters import gaussian, threshold_otsu, threshold_sauvola
    from skimage.measure import regionprops
    from skimage.morphology import dilation, erosion
    from skimage.transform import rescale, resize
    full = np.asarray(brightness, dtype=np.float64)
    # 1. A phone photo has far more pixels than a 20-pixel digit needs: shrink it so its
    #    longer side is at most 1,000 pixels (faster, and averaging smooths the noise).
    scale = min(1.0, WORKING_SIDE / max(full.shape))
    brightness = rescale(full, scale, order=1, anti_aliasing=True)
    # 2. Stretch the picture's own darkest..lightest to 0..1, whatever its bit depth or exposure.
    gray = rescale_intensity(brightness, out_range=(0.0, 1.0))
    # 3. Page and ink, judged on a small copy of the whole picture. --background overrides it.
    small = rescale(gray, min(1.0, ANALYSIS_SIDE / max(gray.shape)), order=1, anti_aliasing=True)
    light_page = _light_page(small) if background == "auto" else background == "light"
    if not light_page:               # from here on the ink is dark on a light page
        gray, small = 1 - gray, 1 - small
    # 4. The page behind the ink: what is left when every feature narrower than ink can be
    #    (PAGE_SCALE) is filled in with what surrounds it (a morphological closing). It
    #    follows shadows, dim corners and the lighting across the page; beyond the picture's
    #    edge its slopes are continued, so that light falling off towards an edge is followed.
    radius = max(1, round(PAGE_SCALE * max(small.shape) / 2))
    page, square = small, np.ones((2 * radius + 1,) * 2, dtype=bool)
    for step in (dilation, erosion):              # a closing, the edge's slopes continued
        page = step(np.pad(page, radius, mode="reflect", reflect_type="odd"),
                    square)[radius:-radius, radius:-radius]
    page = np.clip(resize(page, gray.shape, order=1), 0, 1)
    # 5. Noise: paper grain, camera noise and JPEG artefacts make the page vary; neighbouring
    #    pixels show by how much (their typical difference, across rows or down columns,
    #    whichever is smaller: the edges of strokes sway it less). Noisy pictures (low light,
    #    high ISO) are smoothed first, as much as it takes.
    typical = min((np.median(np.abs(np.diff(gray, axis=axis))) for axis in (0, 1)
                   if gray.shape[axis] > 1), default=0.0)
    noise = typical / 0.6745 / np.sqrt(2) / max(np.median(page), 0.05)
    sigma = min(noise / 0.02, 4, max(gray.shape) / 200)
    smoothed = noise > 0.04 and sigma > 0.5
    if smoothed:                     # what is left of the noise: the page's spread
        gray = gaussian(gray, sigma=sigma)
        left = (page - gray) / np.maximum(page, 0.05)
        noise = 1.4826 * np.median(np.abs(left - np.median(left)))
    # 6. Even out the lighting: each pixel's ink is how much darker it is than the page behind
    #    it, as a share of that page's brightness (a shadow dims page and ink alike); long
    #    thin lines across the page are a notebook's rules, not ink.
    ink = _without_rules(np.clip((page - gray) / np.maximum(page, 0.05), 0, 1))
    # 7. Ink is what stands out both from the whole page (a global threshold: above five
    #    times the noise, a tenth of the page and half of Otsu's split of the ink) and from
    #    what is around it, lighting evened out (Sauvola's local thresholds in a window of a
    #    stroke or two, and in one of a quarter of the picture, for thick strokes): glare and
    #    plain board beside it are not ink, however the page estimate rises there.
    split = threshold_otsu(ink[ink > 0.02]) if np.count_nonzero(ink > 0.02) > 1 else 1.0
    inked = ink > max(5 * noise, 0.1, split / 2)
    windows = {max(15, round(max(gray.shape) / part)) // 2 * 2 + 1 for part in (40, 4)}
    inked &= np.any([1 - ink < threshold_sauvola(1 - ink, window_size=size, k=0.05)
                     for size in windows], 0)
    steps = Preparation(gray, light_page, page, ink, inked)
    # 8. The digit is the ink a person takes for it (see _digit), judged on its own groups.
    #    In a smoothed picture, its ink must stand out from the page around it (within half
    #    its size) by far more than that page varies: blobs of smoothed noise do not.
    steps.digit_mask, steps.several = _digit(inked, ink)
    if steps.digit_mask is None:
        return steps
    steps.box = top, left, bottom, right = regionprops(steps.digit_mask.astype(np.uint8))[0].bbox
    margin = max(bottom - top, right - left) // 2
    around = np.s_[max(0, top - margin):bottom + margin, max(0, left - margin):right + margin]
    rest = ink[around][~inked[around]]
    if smoothed and rest.size and ink[steps.digit_mask].mean() - np.median(rest) < 5 * rest.std():
        steps.digit_mask = steps.box = None
        return steps
    # 9. A small digit in a large photo: its ink read again at full resolution, around the
    #    box found (and a margin of half its size), with the page decided here.
    if scale < 1 and max(bottom - top, right - left) < scale * WORKING_SIDE / 4:
        again = prepare(full[tuple(slice(round(s.start / scale), round(s.stop / scale))
                                   for s in around)], "light" if light_page else "dark")
        steps.digit, steps.several = again.digit, steps.several or again.several
        return steps
    # 10. Crop to the digit's box, then scale it so that its longer side is 20 pixels,
    #    keeping the aspect ratio. Resampling averages the many pixels of a stroke's edge into
    #    grey ones: MNIST's anti-aliasing. Its strokes peak at full ink (255), so do ours:
    #    full ink is most of a stroke's, and ink washed out by glare is still half a stroke.
    box = np.where(steps.digit_mask, ink, 0)[top:bottom, left:right]
    box = np.where(box > 0, np.clip(box / np.percentile(box[box > 0], 90), 0.5, 1), 0)
    small = rescale(box, 20 / max(box.shape), order=1, anti_aliasing=True)   # within 0..1
    small /= small.max()                            # [0, 1], full ink at 1
    # 11. Paste it into 28 x 28 so that its centre of mass sits at the centre, pixel (14, 14),
    #    moving it by whole pixels as MNIST did.
    top, left = (min(max(round(14 - centre), 0), 28 - side)
                 for centre, side in zip(center_of_mass(small), small.shape))
    digit = np.zeros((28, 28), dtype=np.float32)
    digit[top:top + small.shape[0], left:left + small.shape[1]] = small
    steps.digit = digit.ravel()
    return steps


def read_brightness(path):
    """The picture in an image file as brightness: a 2-D float64 array, at most 2,000 pixels a
    side. A file that is not a picture in one of FORMATS (judged by its content, not its
    name), or a picture of more than 50 million pixels (a decompression bomb can claim
    billions in a few bytes), is refused with a DataError before it is decoded; so is one
    whose pixels are not finite numbers (a float TIFF of infinities)."""
    from PIL import Image, UnidentifiedImageError
    check_regular_file(path, expected="an image")
    name = printable(path)
    too_big = (f"{name}: a picture of more than {MAX_PICTURE_PIXELS:,} pixels; expected a "
               f"photo or drawing of one digit (shrink it first)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path, formats=FORMATS) as image:
                width, height = image.size
                if width * height > MAX_PICTURE_PIXELS:
                    raise DataError(f"{too_big}; it is {width:,} x {height:,}")
                brightness = _brightness(image)
    except UnidentifiedImageError:
        raise DataError(f"{name}: not an image file of a kind read here "
                        f"({', '.join(FORMATS)})") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise DataError(too_big) from None
    except MemoryError:
        raise DataError(f"{name}: not enough memory to read this picture") from None
    except (OSError, ValueError, SyntaxError, EOFError) as error:
        raise DataError(f"{name}: could not be read as an image ({error})") from None
    if not np.isfinite(brightness).all():
        raise DataError(f"{name}: pixels that are not finite numbers (infinite or NaN); "
                        f"expected a picture of one digit")
    return brightness


def read_picture(path, background="auto"):
    """An image file (PNG, JPEG, ...) of one digit prepared as --predict prepares it: every
    step (see prepare), its .digit never None; raises DataError when it cannot be."""
    steps = prepare(read_brightness(path), background)
    if steps.digit is None:
        hint = ("try --background light or dark" if background == "auto"
                else "try another --background, or --background auto")
        raise DataError(f"{printable(path)}: found no ink, nothing that stands out from the "
                        f"page; expected a picture of one digit ({hint}, or crop the picture "
                        f"closer to the digit)")
    return steps


def read_image(path, background="auto"):
    """An image file (PNG, JPEG, ...) of one digit as the 784 pixels MNIST would have made of
    it, exactly as --predict reads it; raises DataError when it cannot (see prepare).

    >>> digit = read_image("my_digit.png")                # doctest: +SKIP
    >>> net.predict(digit[None]).argmax()                 # doctest: +SKIP
    """
    return read_picture(path, background).digit


def predicts_images(paths):
    """--predict takes images (files or folders of them), or else one CSV file."""
    return len(paths) > 1 or os.path.isdir(paths[0]) or is_image_name(paths[0])


def image_files(paths):
    """The files --predict reads as pictures: each path given, and each file in a folder given
    (in name order). A folder's hidden files (dotfiles: .DS_Store, or the ._name.png a Mac
    leaves beside name.png) and its subfolders are passed over; its other entries are all kept,
    pictures or not, so that read_to_predict names each one that is not. A folder without a
    single picture is refused at once: there would be nothing to predict."""
    files = []
    for path in paths:
        if not os.path.isdir(path):
            files.append(path)
            continue
        found = sorted(entry.path for entry in os.scandir(path)     # a symlink loop too:
                       if not entry.name.startswith(".") and not os.path.isdir(entry.path))
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
    Every file is read: each one refused (not a picture, no ink, too large for the memory
    left, ...) is named in one line on standard error as it comes, and the others are kept;
    so is each picture that seems to hold more than one digit (its largest is read)."""
    if not paths:
        return None, [], [], []
    if not predicts_images(paths):
        return load_mnist_csv(paths[0], labelled=False)[0], [], [], []
    if importlib.util.find_spec("skimage") is None:     # prepare's image processing
        raise DataError("--predict with images needs scikit-image, which is not installed: "
                        "pip install scikit-image")
    read, digits, refused = [], [], []
    for path in image_files(paths):
        try:
            check_picture_name(path)
            steps = read_picture(path, background)
            if steps.several:
                print(f"note: {printable(path)}: seems to hold more than one digit; the "
                      f"largest is read", file=sys.stderr)
            digits.append(steps.digit)
            read.append(path)
        except (DataError, MemoryError) as error:
            if isinstance(error, MemoryError):
                error = f"{path}: not enough memory to prepare this picture"
            print(f"error: {printable(error)}", file=sys.stderr)
            refused.append(path)
    return None, read, digits, refused


def refused_summary(refused, files):
    """The closing line of a run that refused files: how many, and which."""
    return (f"refused {len(refused):,} of {files:,} file{'' if files == 1 else 's'}: "
            + ", ".join(printable(path) for path in refused))
