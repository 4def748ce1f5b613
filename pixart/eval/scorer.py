"""Score an emoji-world image against the scene its prompt asked for, without using the generator.

Like GenEval (Ghosh et al. 2023), an image is read by a detector and checked against the prompt, and it passes when
all of its checks pass. Here the "detector" knows the emoji world: the background is one plain PALETTE colour and
the objects are OpenMoji glyphs. Four kinds of check (`CATEGORIES`):

    background  the dominant colour of the image border, as the nearest PALETTE colour, is the requested one
    identity    each requested emoji kind is found at least once
    count       each requested emoji kind is found exactly as many times as requested
    position    what the prompt says about where things are (`position_claims`): a single object's 3x3 grid
                cell ("at the top left"), or the relation of two different objects ("next to" = to the left of,
                "above"); with the long caption every object's cell

Detection (`detect`), all from pixels and OpenMoji renders of the whole vocabulary, deterministic:
  1. background: each border pixel votes for its nearest PALETTE colour; the winners' median is the colour
  2. foreground: pixels farther than `FOREGROUND_DISTANCE` from it (more on a noisy background), joined into
     8-connected components after a small dilation; a piece whose box lies inside a larger one's joins it
  3. each component is classified by cosine similarity of its normalised crop (its ink centred in a square,
     24x24, background subtracted) with every glyph composited on the same background and normalised the same
     way, sharp and softened (`VARIANTS`: small, blurred and down-up-scaled copies, as a decoder softens)
  4. close pieces are joined while their union matches a glyph better than they do apart (a candle's flame and
     body fall apart on black, where OpenMoji's black outline vanishes)
  5. a component no glyph explains well and big enough to hold two objects (touching objects) is searched by
     sliding-window matching at several sizes; its best non-overlapping windows replace it if they match better
A detection whose best similarity is below `MIN_SCORE` is "unknown": it counts as no emoji at all.

Accuracy on real renders (`pixart eval --self-test`, 400 held-out scenes a column): 99.5-100% per category at
128x128 and 256x256, 98.9-100% after a lossy round trip (half-size and back, blur, JPEG 75).
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from pixart.data.emoji import Scene
from pixart.data.emoji_vocab import PALETTE, POSITIONS, VOCABULARY, emoji_tile, position_of

CATEGORIES = ("background", "identity", "count", "position")
FOREGROUND_DISTANCE = 24.0  # RGB distance (0-255 scale) from the background colour that counts as ink
CROP = 24  # side of the normalised crop a component is classified from
TEMPLATE_SIDE = 64  # glyphs are rendered once at this size, then resized
CLEAN_SCORE = 0.96  # a component matching one glyph this well is taken as that one object
MIN_SCORE = 0.6  # below this similarity a detection is "unknown"
SEARCH_SIDE = 56  # a component searched by sliding windows is resized so its longer side is at most this
MAX_PIECES = 24  # an image in more foreground pieces than this is noise: fragments are not joined
MAX_SEARCHES = 6  # at most this many components per image get the (slower) sliding-window search
RELATION_MARGIN = 0.02  # "left of"/"above" need the centres this far apart (fraction of the image side)


# ---- results ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Detection:
    """One object found in an image: its vocabulary name (None = unknown), similarity and ink box (x0, y0, x1, y1)."""

    name: str | None
    score: float
    box: tuple[int, int, int, int]

    @property
    def x(self) -> float:
        return (self.box[0] + self.box[2]) / 2

    @property
    def y(self) -> float:
        return (self.box[1] + self.box[3]) / 2


@dataclass(frozen=True)
class Check:
    """One yes/no question about an image, e.g. ("count", "cat", expected "2", found "1", passed False)."""

    category: str
    subject: str
    expected: str
    found: str
    passed: bool


@dataclass(frozen=True)
class ImageScore:
    """All checks of one image, with what the detector saw."""

    checks: tuple[Check, ...]
    background: str
    detections: tuple[Detection, ...] = field(repr=False)

    @property
    def passed(self) -> bool:
        """GenEval's image-level verdict: every check passed."""
        return all(c.passed for c in self.checks)

    def tally(self) -> dict[str, tuple[int, int]]:
        """(passed, total) checks per category; a category without checks is (0, 0)."""
        out = {c: (0, 0) for c in CATEGORIES}
        for c in self.checks:
            passed, total = out[c.category]
            out[c.category] = (passed + c.passed, total + 1)
        return out

    def to_dict(self) -> dict:
        return {
            "passed": self.passed,
            "background": self.background,
            "checks": [vars(c) for c in self.checks],
            "detections": [{"name": d.name, "score": round(d.score, 4), "box": list(d.box)} for d in self.detections],
        }


# ---- pixels -----------------------------------------------------------------------------------------------------


def read_background(pixels: np.ndarray) -> tuple[str, np.ndarray, float]:
    """The PALETTE colour most border pixels are nearest to: (name, those pixels' median RGB, their noise).

    Args:
        pixels: (H, W, 3) uint8.
    Returns:
        noise: the 90th percentile of those pixels' distance to the median (0 for a flat render).
    """
    h, w, _ = pixels.shape
    b = max(1, min(h, w) // 32)
    ring = np.concatenate(
        [
            pixels[:b].reshape(-1, 3),
            pixels[-b:].reshape(-1, 3),
            pixels[:, :b].reshape(-1, 3),
            pixels[:, -b:].reshape(-1, 3),
        ]
    ).astype(np.float32)
    palette = np.array(list(PALETTE.values()), np.float32)  # (P, 3)
    nearest = ((ring[:, None, :] - palette[None]) ** 2).sum(-1).argmin(1)  # (N,)
    winner = int(np.bincount(nearest, minlength=len(palette)).argmax())
    votes = ring[nearest == winner]
    rgb = np.median(votes, axis=0)
    noise = float(np.percentile(np.sqrt(((votes - rgb) ** 2).sum(-1)), 90))
    return list(PALETTE)[winner], rgb, noise


def dilate(mask: np.ndarray, radius: int) -> np.ndarray:
    """Binary dilation by a (2r+1)^2 square, separably."""
    out = mask.copy()
    for axis in (0, 1):
        src = out.copy()
        for k in range(1, radius + 1):
            if axis == 0:
                out[k:] |= src[:-k]
                out[:-k] |= src[k:]
            else:
                out[:, k:] |= src[:, :-k]
                out[:, :-k] |= src[:, k:]
    return out


def label_components(mask: np.ndarray) -> tuple[np.ndarray, int]:
    """8-connected components of a boolean mask: ((H, W) int32 labels 1..n, 0 = background; n).

    Union-find over horizontal runs, so the Python loop is over runs, not pixels. Labels are numbered in
    raster order of each component's first pixel.
    """
    h, w = mask.shape
    padded = np.zeros((h, w + 2), np.int8)
    padded[:, 1:-1] = mask
    step = np.diff(padded, axis=1)
    rows, starts = np.nonzero(step == 1)
    _, ends = np.nonzero(step == -1)  # exclusive; paired with `starts` (both in raster order)
    parent = list(range(len(rows)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    first = np.searchsorted(rows, np.arange(h + 1))  # runs of row r: first[r]..first[r+1]
    for r in range(1, h):
        i, i_end, j, j_end = first[r - 1], first[r], first[r], first[r + 1]
        while i < i_end and j < j_end:
            if starts[i] <= ends[j] and starts[j] <= ends[i]:  # touching, diagonals included
                a, b = find(i), find(j)
                if a != b:
                    parent[max(a, b)] = min(a, b)
            if ends[i] < ends[j]:
                i += 1
            else:
                j += 1
    roots = np.array([find(i) for i in range(len(rows))], np.int64)
    _, ids = np.unique(roots, return_inverse=True)
    labels = np.zeros((h, w), np.int32)
    for row, s, e, k in zip(rows, starts, ends, ids, strict=True):
        labels[row, s:e] = k + 1
    return labels, int(ids.max() + 1) if len(ids) else 0


def _box(mask: np.ndarray) -> tuple[int, int, int, int]:
    ys, xs = np.nonzero(mask)
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1


def _area(b: tuple[int, int, int, int]) -> int:
    return max(0, b[2] - b[0]) * max(0, b[3] - b[1])


def _intersection(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> int:
    return _area((max(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), min(a[3], b[3])))


def find_components(mask: np.ndarray, radius: int, min_side: float) -> list[np.ndarray]:
    """Foreground pieces as boolean masks: components of the dilated mask, fragments merged into their host.

    A component whose (radius-expanded) box lies at least half inside a larger one's joins it (smallest first).
    Pieces smaller than `min_side` pixels on their longer side (specks) are then dropped.
    """
    labels, n = label_components(dilate(mask, radius))
    parts = [(labels == k) & mask for k in range(1, n + 1)]
    parts = [p for p in parts if p.any()]
    boxes = np.array([_box(p) for p in parts], np.int64).reshape(-1, 4)  # (n, 4) x0, y0, x1, y1
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    alive = np.ones(len(parts), bool)
    for i in np.argsort(areas, kind="stable"):
        grown = boxes[i] + np.array([-radius, -radius, radius, radius])
        inner = np.clip(np.minimum(grown[2:], boxes[:, 2:]) - np.maximum(grown[:2], boxes[:, :2]), 0, None).prod(1)
        host = alive & (areas >= areas[i]) & (inner >= 0.5 * (grown[2:] - grown[:2]).prod())
        host[i] = False
        if host.any():
            j = int(np.flatnonzero(host)[np.argmax(inner[host])])
            parts[j] = parts[j] | parts[i]
            boxes[j] = np.concatenate([np.minimum(boxes[i, :2], boxes[j, :2]), np.maximum(boxes[i, 2:], boxes[j, 2:])])
            areas[j] = (boxes[j, 2] - boxes[j, 0]) * (boxes[j, 3] - boxes[j, 1])
            alive[i] = False
    sides = np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])
    return [parts[k] for k in np.flatnonzero(alive & (sides >= min_side))]


# ---- templates --------------------------------------------------------------------------------------------------
# Everything below works on "ink": pixels minus the background RGB, in 0-1 units, so the background is zero and
# resizing or blurring with zero padding is the same as doing it on the image.


def _blur(ink: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of (..., H, W) ink with zero (= background) padding."""
    if sigma <= 0:
        return ink
    rows = torch.from_numpy(_blur_matrix(ink.shape[-2], sigma))
    cols = torch.from_numpy(_blur_matrix(ink.shape[-1], sigma))
    return rows @ ink @ cols.T


def _resize(ink: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(N, C, H, W) -> (N, C, *size), antialiased when shrinking."""
    return F.interpolate(ink, size=size, mode="bilinear", antialias=True, align_corners=False)


def normalised_crop(ink: torch.Tensor, mask: np.ndarray) -> np.ndarray:
    """The masked ink centred in a square with a 1/8 margin, resized to CROP^2, slightly blurred, unit norm.

    Args:
        ink: (3, H, W) float, image minus background RGB, / 255; mask: (H, W) bool, the object's pixels.
    Returns:
        (3 * CROP * CROP,) float32; zeros for an empty mask.
    """
    if not mask.any():
        return np.zeros(3 * CROP * CROP, np.float32)
    x0, y0, x1, y1 = _box(mask)
    side = max(x1 - x0, y1 - y0)
    full = side + 2 * max(1, side // 8)
    ox, oy = (x0 + x1 - full) // 2, (y0 + y1 - full) // 2  # canvas origin in image coordinates
    canvas = torch.zeros(1, 3, full, full)
    keep = torch.from_numpy(mask[y0:y1, x0:x1])
    canvas[0, :, y0 - oy : y1 - oy, x0 - ox : x1 - ox] = ink[:, y0:y1, x0:x1] * keep
    feature = _blur(_resize(canvas, (CROP, CROP))[0], 0.7).flatten().numpy()  # (3 * CROP * CROP,)
    return feature / max(float(np.linalg.norm(feature)), 1e-6)


@functools.cache
def _blur_matrix(n: int, sigma: float) -> np.ndarray:
    """(n, n): 1-D Gaussian blur with zero padding as a matrix (small images: cheaper than a convolution)."""
    offsets = np.arange(n)[:, None] - np.arange(n)[None, :]
    m = np.exp(-0.5 * (offsets / sigma) ** 2) * (np.abs(offsets) <= math.ceil(3 * sigma))
    r = math.ceil(3 * sigma)
    return (m / np.exp(-0.5 * (np.arange(-r, r + 1) / sigma) ** 2).sum()).astype(np.float32)


@functools.cache
def _glyphs() -> torch.Tensor:
    """(V, 4, S, S) float in 0-1: every vocabulary glyph, its longer side TEMPLATE_SIDE, centred; RGB + alpha."""
    stack = []
    for entry in VOCABULARY:
        tile = emoji_tile(entry.hexcode, TEMPLATE_SIDE)
        square = Image.new("RGBA", (TEMPLATE_SIDE, TEMPLATE_SIDE), (0, 0, 0, 0))
        square.paste(tile, ((TEMPLATE_SIDE - tile.width) // 2, (TEMPLATE_SIDE - tile.height) // 2))
        stack.append(np.asarray(square, np.float32) / 255)
    return torch.from_numpy(np.stack(stack)).permute(0, 3, 1, 2).contiguous()


def _glyph_ink(background: str) -> torch.Tensor:
    """(V, 3, S, S): every glyph composited on the background colour, as ink (alpha * (glyph - background))."""
    glyphs = _glyphs()
    rgb = torch.tensor(PALETTE[background], dtype=torch.float32)[:, None, None] / 255
    return glyphs[:, 3:] * (glyphs[:, :3] - rgb)


def _ink_mask(ink: torch.Tensor, threshold: float = FOREGROUND_DISTANCE) -> np.ndarray:
    """(..., H, W) bool from (..., 3, H, W) ink: farther than `threshold` (0-255 RGB distance) from the background."""
    return (ink.square().sum(-3) > (threshold / 255) ** 2).numpy()


# How each glyph is also seen in the crop bank: (longest side in pixels, downscale factor, Gaussian blur sigma).
# Small, softened copies let a blurry generated (or VAE-decoded) object match its glyph.
VARIANTS = ((TEMPLATE_SIDE, 1, 0.0), (40, 1, 0.8), (28, 2, 0.6), (20, 1, 1.0))


@functools.cache
def crop_bank(background: str) -> np.ndarray:
    """(V, len(VARIANTS), 3*CROP*CROP): every glyph on this background, in each variant, through `normalised_crop`."""
    ink = _glyph_ink(background)  # (V, 3, S, S)
    features = np.zeros((len(VOCABULARY), len(VARIANTS), 3 * CROP * CROP), np.float32)
    for j, (side, down, sigma) in enumerate(VARIANTS):
        view = F.pad(_resize(ink, (side, side)), [side // 4] * 4)  # a quarter-side margin of background
        if down > 1:
            full = view.shape[-1]
            view = F.interpolate(_resize(view, (full // down, full // down)), size=(full, full), mode="bicubic")
        view = _blur(view, sigma)
        masks = _ink_mask(view)
        for v in range(len(VOCABULARY)):
            features[v, j] = normalised_crop(view[v], masks[v])
    return features


# Window sides tried by the sliding search (pixels at the search scale): a fixed ladder, so banks are reused.
WINDOW_SIDES = (8, 9, 10, 12, 14, 16, 18, 21, 24, 27, 31, 35, 40, 46, 52)


@functools.lru_cache(maxsize=64)
def window_bank(background: str, side: int) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
    """Sliding-window templates of every glyph, its longer side `side` pixels.

    Returns:
        kernels (V, 3, side, side) ink, unit-norm; energy (V,), their squared norm before normalising;
        boxes (V, 4) int, each glyph's box (x0, y0, x1, y1) inside the window.
    """
    kernels = _resize(_glyph_ink(background), (side, side))  # (V, 3, s, s)
    energy = kernels.square().sum(dim=(1, 2, 3))  # (V,)
    alpha = _resize(_glyphs()[:, 3:], (side, side))[:, 0].numpy() > 0.25  # (V, s, s)
    rows, cols = alpha.any(2), alpha.any(1)  # (V, s)
    x0, y0 = cols.argmax(1), rows.argmax(1)
    x1, y1 = side - cols[:, ::-1].argmax(1), side - rows[:, ::-1].argmax(1)
    return kernels / energy.sqrt().clamp_min(1e-6)[:, None, None, None], energy, np.stack([x0, y0, x1, y1], 1)


# ---- detection --------------------------------------------------------------------------------------------------


def _classify(ink: torch.Tensor, mask: np.ndarray, background: str) -> tuple[int, float]:
    """(glyph index, cosine similarity) of the best match of one object's normalised crop."""
    scores = (crop_bank(background) @ normalised_crop(ink, mask)).max(1)  # (V,): best variant per glyph
    best = int(scores.argmax())
    return best, float(scores[best])


def _search(ink: torch.Tensor, mask: np.ndarray, background: str, min_side: float) -> list:
    """Explain one component as one or more glyphs by sliding-window matching; [(index, score, box)].

    Each window is scored by cosine similarity (background subtracted) with every glyph at every ladder size
    between `min_side` (or a quarter of the component) and the component's longer side; the candidates are
    then taken greedily, best first, skipping any whose box overlaps one already taken (non-maximum suppression).
    """
    x0, y0, x1, y1 = _box(mask)
    longest = max(x1 - x0, y1 - y0)
    pad = max(2, longest // 8)
    x0, y0 = max(0, x0 - pad), max(0, y0 - pad)
    x1, y1 = min(ink.shape[2], x1 + pad), min(ink.shape[1], y1 + pad)
    region = ink[None, :, y0:y1, x0:x1] * torch.from_numpy(mask[y0:y1, x0:x1])  # (1, 3, H', W')
    scale = min(1.0, SEARCH_SIDE / max(x1 - x0, y1 - y0))
    region = _resize(region, (max(1, round((y1 - y0) * scale)), max(1, round((x1 - x0) * scale))))  # (1, 3, h, w)
    total = float(region.square().sum())
    lo, hi = max(0.25 * longest, min_side) * scale, longest * scale * 1.05
    candidates = []
    for side in [s for s in WINDOW_SIDES if lo <= s <= hi] or [WINDOW_SIDES[0]]:
        kernels, energy, boxes = window_bank(background, side)
        p = side // 2
        corr = F.conv2d(F.pad(region, (p, p, p, p)), kernels)[0]  # (V, h', w')
        power = F.pad(region.square().sum(1, keepdim=True), (p, p, p, p))  # (1, 1, h + 2p, w + 2p)
        local = F.conv2d(power, torch.ones(1, 1, side, side))[0]  # (1, h', w'): ink energy under each window
        cosine = corr / local.sqrt().clamp_min(1e-6)  # (V, h', w')
        cosine = torch.where(local >= 0.25 * energy[:, None, None], cosine, torch.zeros(()))
        # Rank by similarity times a mild reward for covering more of the ink: a small glyph matching a part of
        # a larger object must not outrank the whole object.
        rank = cosine * (local / total).clamp(max=1) ** 0.25  # (V, h', w')
        best, index = rank.max(0)  # (h', w')
        peaks = torch.where(best == F.max_pool2d(best[None], 5, 1, 2)[0], best, torch.zeros(()))
        for flat in torch.topk(peaks.flatten(), min(16, peaks.numel())).indices.tolist():
            row, col = divmod(flat, best.shape[1])
            v = int(index[row, col])
            bx0, by0, bx1, by1 = (boxes[v] + np.array([col - p, row - p, col - p, row - p])) / scale
            box = (round(x0 + bx0), round(y0 + by0), round(x0 + bx1), round(y0 + by1))
            candidates.append((float(best[row, col]), float(cosine[v, row, col]), v, box))
    found: list[tuple[int, float, tuple[int, int, int, int]]] = []
    for _, score, v, box in sorted(candidates, key=lambda c: -c[0]):
        if score >= MIN_SCORE and all(_intersection(box, b) <= 0.3 * min(_area(box), _area(b)) for *_, b in found):
            found.append((v, score, box))
    return found


def _gap(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> int:
    """Chessboard distance between two boxes (0 when they touch or overlap)."""
    return max(0, a[0] - b[2], b[0] - a[2], a[1] - b[3], b[1] - a[3])


def _join_fragments(ink: torch.Tensor, parts: list, background: str, gap: float) -> list:
    """Classify each piece; join two close pieces while their union matches a glyph better than they do apart.

    A glyph can fall apart where its black outline meets a black background or a blurry decoder softens it (a
    candle's flame and its body); two different objects never match one glyph better than apart.
    Returns [(mask, index, score)].
    """
    items = [(p, *_classify(ink, p, background)) for p in parts]
    while True:
        best = None
        for i, j in itertools.combinations(range(len(items)), 2):
            (a, _, sa), (b, _, sb) = items[i], items[j]
            if _gap(_box(a), _box(b)) > gap:
                continue
            union = a | b
            v, score = _classify(ink, union, background)
            apart = _weighted_score([(0, sa, _box(a)), (0, sb, _box(b))])
            if score > apart and (best is None or score > best[0]):
                best = (score, i, j, (union, v, score))
        if best is None:
            return items
        _, i, j, joined = best
        items = [it for k, it in enumerate(items) if k not in (i, j)] + [joined]


def _weighted_score(found: list) -> float:
    """Mean similarity of several detections, weighted by box area (bigger objects are matched more reliably)."""
    areas = [_area(box) for *_, box in found]
    return sum(a * score for a, (_, score, _) in zip(areas, found, strict=True)) / max(sum(areas), 1)


@dataclass(frozen=True)
class Reading:
    """What the detector saw in an image: the background colour (name, RGB, noise) and the objects."""

    background: str
    rgb: tuple[float, float, float]
    threshold: float  # foreground distance used: FOREGROUND_DISTANCE, or more on a noisy background
    detections: tuple[Detection, ...]


def detect(image: Image.Image) -> Reading:
    """Find the background colour and the emoji in an image (deterministic; pixels only)."""
    pixels = np.asarray(image.convert("RGB"))
    background, rgb, noise = read_background(pixels)
    side = min(pixels.shape[:2])
    threshold = max(FOREGROUND_DISTANCE, 3 * noise)  # a generated background is seldom perfectly flat
    ink = torch.from_numpy((pixels - rgb.astype(np.float32)) / 255).permute(2, 0, 1)  # (3, H, W)
    min_side = 0.08 * side
    pieces = find_components(_ink_mask(ink, threshold), max(1, round(0.012 * side)), 0.03 * side)
    if len(pieces) <= MAX_PIECES:  # more is noise, not an emoji scene: skip the (quadratic) joining
        items = _join_fragments(ink, pieces, background, 0.05 * side)
    else:
        items = [(p, *_classify(ink, p, background)) for p in pieces]
    items = [(part, idx, score, _box(part)) for part, idx, score in items]
    items = sorted((it for it in items if _long_side(it[3]) >= min_side), key=lambda it: (it[3][1], it[3][0]))
    # Touching objects: a poorly matched component big enough to hold two is searched, the largest first and
    # at most MAX_SEARCHES of them, so a noisy image stays cheap.
    searchable = [k for k, it in enumerate(items) if it[2] < CLEAN_SCORE and _long_side(it[3]) >= 2 * min_side]
    searchable = sorted(searchable, key=lambda k: -_area(items[k][3]))[:MAX_SEARCHES]
    detections = []
    for k, (part, idx, score, box) in enumerate(items):
        found = [(idx, score, box)]
        if k in searchable:  # keep the search's answer if it explains the component better
            pieces = _search(ink, part, background, min_side)
            if len(pieces) > 1 and _weighted_score(pieces) > score:
                found = pieces
        for idx, score, box in found:
            detections.append(Detection(VOCABULARY[idx].name if score >= MIN_SCORE else None, score, box))
    return Reading(background, tuple(float(c) for c in rgb), threshold, tuple(detections))


def _long_side(box: tuple[int, int, int, int]) -> int:
    return max(box[2] - box[0], box[3] - box[1])


def score_image(image: Image.Image, scene: Scene, caption: str = "short") -> ImageScore:
    """Check an image against the scene its prompt was made from.

    Args:
        image: any size; positions are compared as fractions of it, so the scene may be drawn at another size.
        scene: the requested scene. caption: which caption was the prompt ("short" or "long"; see
            `position_claims`).
    """
    reading = detect(image)
    checks = check_scene(scene, reading.background, reading.detections, image.size, caption)
    return ImageScore(checks, reading.background, reading.detections)


# ---- checks -----------------------------------------------------------------------------------------------------


def position_claims(scene: Scene, caption: str = "short") -> list[tuple]:
    """What a caption states about positions, as the scorer checks it.

    Returns a list of ("cell", name, position word) and ("relation", name_a, "left of" | "above", name_b). The short
    caption places a single object in its cell and relates two different objects ("next to" = left of); it says
    nothing about where groups or three objects are. The long caption gives every object's cell.
    """
    if caption not in ("short", "long"):
        raise ValueError(f"caption {caption!r}: allowed are short, long")
    objects = scene.objects
    if caption == "long":
        return [("cell", o.name, o.position) for o in objects]
    if len(objects) == 1:
        return [("cell", objects[0].name, objects[0].position)]
    if len(objects) == 2 and objects[0].name != objects[1].name:
        a, b = objects
        if abs(a.x - b.x) >= abs(a.y - b.y):
            return [("relation", *((a.name, "left of", b.name) if a.x <= b.x else (b.name, "left of", a.name)))]
        return [("relation", *((a.name, "above", b.name) if a.y <= b.y else (b.name, "above", a.name)))]
    return []


def check_scene(
    scene: Scene,
    background: str,
    detections: Sequence[Detection],
    size: tuple[int, int],
    caption: str = "short",
) -> tuple[Check, ...]:
    """The checks of one image, given what was detected in it and its (width, height)."""
    width, height = size
    checks = [Check("background", "background", scene.background, background, background == scene.background)]
    found: dict[str, list[Detection]] = {}
    for d in detections:
        if d.name is not None:
            found.setdefault(d.name, []).append(d)
    counts = scene.counts()
    for name in counts:
        checks.append(Check("identity", name, "present", "present" if name in found else "absent", name in found))
    for name, n in counts.items():
        got = len(found.get(name, []))
        checks.append(Check("count", name, str(n), str(got), got == n))
    claims = position_claims(scene, caption)
    for name in dict.fromkeys(c[1] for c in claims if c[0] == "cell"):
        wanted = [c[2] for c in claims if c[0] == "cell" and c[1] == name]
        cells = [
            position_of(d.x * scene.width / width, d.y * scene.height / height, scene.width, scene.height)
            for d in found.get(name, [])
        ]
        where = ", ".join(sorted(set(cells), key=POSITIONS.index)) or "absent"
        for cell, hit in zip(wanted, _matched(wanted, cells), strict=True):
            checks.append(Check("position", f"{name} at {cell}", cell, where, hit))
    for _, a, relation, b in (c for c in claims if c[0] == "relation"):
        ok = any(_holds(da, relation, db, width, height) for da in found.get(a, []) for db in found.get(b, []))
        seen = "yes" if ok else "no" if a in found and b in found else "absent"
        checks.append(Check("position", f"{a} {relation} {b}", "yes", seen, ok))
    return tuple(checks)


def _matched(wanted: list[str], cells: list[str]) -> list[bool]:
    """Which wanted cells distinct detections cover, under the best assignment (at most 3 objects a kind)."""
    best = [False] * len(wanted)
    padded = list(cells) + [None] * max(0, len(wanted) - len(cells))
    for perm in itertools.permutations(padded, len(wanted)):
        hits = [c == w for c, w in zip(perm, wanted, strict=True)]
        if sum(hits) > sum(best):
            best = hits
    return best


def _holds(a: Detection, relation: str, b: Detection, width: int, height: int) -> bool:
    if relation == "left of":
        return b.x - a.x > RELATION_MARGIN * width
    return b.y - a.y > RELATION_MARGIN * height
