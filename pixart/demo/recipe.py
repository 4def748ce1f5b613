"""The demo model's recipe as data: the build's stages in order, which DiT stage starts from which, which caches
each trains on, the T5 recipes' options, the base stage's segments and the datasets' sizes.

`pixart.demo.build` runs it (`python -m pixart.demo.build`); the why of each stage is in its config
(configs/demo/STAGE.toml) and in docs/demo-model.md.
"""

from __future__ import annotations

STAGES = (
    "data",
    "text_encoder",
    "vae",
    "cache-128",
    "base",
    "data-lesson",
    "cache-lesson",
    "lesson",
    "full",
    "cache-256",
    "hires",
    "kv",
    "text_encoder-v2",
    "data-centre",
    "cache-centre-v2",
    "retext-centre",
    "cache-lesson-v2",
    "retext-lesson",
    "cache-128-v2",
    "retext-full",
    "retext-mix",
    "cache-256-v2",
    "retext-kv",
    "text_encoder-v4",
    "cache-centre-v4",
    "cache-lesson-v4",
    "cache-128-v4",
    "layout-mix",
    "cache-256-v4",
    "layout-kv",
    "text_encoder-v5",
    "cache-centre-v5",
    "cache-lesson-v5",
    "cache-128-v5",
    "draw-centre",
    "draw-singles",
    "data-lesson-256",
    "cache-lesson-256-v2",
    "draw-kv",
    "bind-mix",
    "data-pair",
    "cache-pair-v2",
    "pair-mix",
    "data-pair-256",
    "cache-pair-256-v2",
    "pair-kv",
    "data-centre-256",
    "cache-centre-256-v2",
    "draw-hires",
    "grow",
    "deep-hires",
    "draw-focus",
    "draw-mid",
    "draw-cool",
    "data-lesson-256-snap",
    "data-pair-256-snap",
    "cache-lesson-256-snap-v2",
    "cache-pair-256-snap-v2",
    "draw-snap",
    "data-pair-256-canon",
    "data-multi-256-canon",
    "cache-pair-256-canon-v2",
    "cache-multi-256-canon-v2",
    "draw-canon",
    "data-pair2-256-canon",
    "cache-pair2-256-canon-v2",
    "draw-pairs",
    "cache-lesson-256-snap-v5",
    "cache-centre-256-v5",
    "cache-pair-256-canon-v5",
    "cache-multi-256-canon-v5",
    "cache-pair2-256-canon-v5",
    "bind-canon",
    "cache-lesson-128-snap-v5",
    "cache-centre-128-v5",
    "cache-pair-128-canon-v5",
    "cache-multi-128-canon-v5",
    "cache-pair2-128-canon-v5",
    "scratch-canon",
    "scratch-hires",
    "scratch-kv",
    "data-lesson-256-snap-aspect",
    "data-centre-256-aspect",
    "data-pair-256-canon-aspect",
    "data-multi-256-canon-aspect",
    "data-pair2-256-canon-aspect",
    "cache-lesson-256-snap-aspect-v5",
    "cache-centre-256-aspect-v5",
    "cache-pair-256-canon-aspect-v5",
    "cache-multi-256-canon-aspect-v5",
    "cache-pair2-256-canon-aspect-v5",
    "scratch-aspect",
    "cache-lesson-128-snap-aspect-v5",
    "cache-centre-128-aspect-v5",
    "cache-pair-128-canon-aspect-v5",
    "cache-multi-128-canon-aspect-v5",
    "cache-pair2-128-canon-aspect-v5",
    "aspect-canon",
    "aspect-hires",
    "aspect-kv",
    "package",
)
DIT_STAGES = (
    *("base", "lesson", "full", "hires", "kv"),
    *("retext-centre", "retext-lesson", "retext-full", "retext-mix", "retext-kv"),
    *("layout-mix", "layout-kv"),
    *("draw-centre", "draw-singles", "draw-kv", "bind-mix", "pair-mix", "pair-kv", "draw-hires"),
    "deep-hires",
    "draw-focus",
    "draw-mid",
    "draw-cool",
    "draw-snap",
    "draw-canon",
    "draw-pairs",
    "bind-canon",
    "scratch-canon",  # from scratch: no PREVIOUS
    "scratch-hires",
    "scratch-kv",
    "scratch-aspect",
    "aspect-canon",  # from scratch: no PREVIOUS
    "aspect-hires",
    "aspect-kv",
)
# Each DiT stage after the first starts from the weights its predecessor left: the EMA ("final"), except the lesson,
# which starts from the base's raw weights as its experiment did (the EMA lags the high-noise training behind it).
PREVIOUS = {"lesson": ("base", "final-raw"), "full": ("lesson", "final"), "hires": ("full", "final"),
            "kv": ("hires", "final"), "retext-centre": ("kv", "final"),
            "retext-lesson": ("retext-centre", "final-raw"), "retext-full": ("retext-lesson", "final-raw"),
            "retext-mix": ("retext-full", "final-raw"), "retext-kv": ("retext-mix", "final"),
            "layout-mix": ("retext-mix", "final"), "layout-kv": ("layout-mix", "final"),
            "draw-centre": ("retext-centre", "final-raw"), "draw-singles": ("draw-centre", "final"),
            "draw-kv": ("draw-singles", "final"), "bind-mix": ("draw-singles", "final"),
            "pair-mix": ("draw-singles", "final"),
            "pair-kv": ("pair-mix", "final"), "draw-hires": ("pair-mix", "final"),
            "deep-hires": ("grow", "final"), "draw-focus": ("draw-hires", "final"),
            "draw-mid": ("draw-hires", "final"), "draw-cool": ("draw-hires", "final"),
            "draw-snap": ("draw-hires", "final"), "draw-canon": ("draw-snap", "final"),
            "draw-pairs": ("draw-canon", "final"), "bind-canon": ("draw-pairs", "final"),
            "scratch-hires": ("scratch-canon", "final"), "scratch-kv": ("scratch-hires", "final"),
            "scratch-aspect": ("scratch-hires", "final"), "aspect-hires": ("aspect-canon", "final"),
            "aspect-kv": ("aspect-hires", "final")}  # fmt: skip
CACHE = {"base": "cache-128", "lesson": "cache-lesson", "full": "cache-128", "hires": "cache-256", "kv": "cache-256",
         "retext-centre": "cache-centre-v2", "retext-lesson": "cache-lesson-v2", "retext-full": "cache-128-v2",
         "retext-mix": "cache-128-v2", "retext-kv": "cache-256-v2", "layout-mix": "cache-128-v4",
         "layout-kv": "cache-256-v4", "draw-centre": "cache-centre-v2", "draw-singles": "cache-lesson-v2",
         "draw-kv": "cache-lesson-256-v2", "bind-mix": "cache-128-v5",
         "pair-mix": "cache-pair-v2",
         "pair-kv": "cache-pair-256-v2", "draw-hires": "cache-lesson-256-v2",
         "deep-hires": "cache-lesson-256-v2", "draw-focus": "cache-lesson-256-v2",
         "draw-mid": "cache-lesson-256-v2", "draw-cool": "cache-lesson-256-v2",
         "draw-snap": "cache-lesson-256-snap-v2", "draw-canon": "cache-lesson-256-snap-v2",
         "draw-pairs": "cache-pair2-256-canon-v2", "bind-canon": "cache-pair2-256-canon-v5",
         "scratch-canon": "cache-pair2-128-canon-v5", "scratch-hires": "cache-pair2-256-canon-v5",
         "scratch-kv": "cache-pair2-256-canon-v5", "scratch-aspect": "cache-pair2-256-canon-v5",
         "aspect-canon": "cache-pair2-128-canon-v5", "aspect-hires": "cache-pair2-256-canon-v5",
         "aspect-kv": "cache-pair2-256-canon-v5"}  # fmt: skip
# Stages that train on more caches beside CACHE's (data.mix): (cache, times an epoch) each.
MIX = {
    "retext-mix": (("cache-lesson-v2", 1), ("cache-centre-v2", 2)),
    "layout-mix": (("cache-lesson-v4", 1), ("cache-centre-v4", 2)),
    "draw-singles": (("cache-centre-v2", 1),),
    "bind-mix": (("cache-lesson-v5", 2), ("cache-centre-v5", 2)),
    "pair-mix": (("cache-lesson-v2", 1), ("cache-centre-v2", 1)),
    "pair-kv": (("cache-lesson-256-v2", 1),),
    "draw-hires": (("cache-centre-256-v2", 2), ("cache-pair-256-v2", 1)),
    "deep-hires": (("cache-centre-256-v2", 2), ("cache-pair-256-v2", 1)),
    "draw-focus": (("cache-centre-256-v2", 2), ("cache-pair-256-v2", 1)),
    "draw-mid": (("cache-centre-256-v2", 2), ("cache-pair-256-v2", 1)),
    "draw-cool": (("cache-centre-256-v2", 2), ("cache-pair-256-v2", 1)),
    "draw-snap": (("cache-centre-256-v2", 1), ("cache-pair-256-snap-v2", 1)),
    "draw-canon": (("cache-centre-256-v2", 1), ("cache-pair-256-canon-v2", 1), ("cache-multi-256-canon-v2", 1)),
    # draw-pairs: the main cache is the second canonical pair world (4,000 scenes); the snapped one-emoji world twice
    # keeps lone emoji at a third of the scenes.
    "draw-pairs": (
        ("cache-lesson-256-snap-v2", 2),
        ("cache-centre-256-v2", 1),
        ("cache-pair-256-canon-v2", 1),
        ("cache-multi-256-canon-v2", 1),
    ),
}
# bind-canon: draw-pairs' worlds and shares, read through the fifth T5 (names that know their role and size).
MIX["bind-canon"] = tuple((cache.replace("-v2", "-v5"), times) for cache, times in MIX["draw-pairs"])
# scratch-canon: bind-canon's worlds and shares at 128 px, from scratch.
MIX["scratch-canon"] = tuple((cache.replace("-256", "-128"), times) for cache, times in MIX["bind-canon"])
MIX["scratch-hires"] = MIX["bind-canon"]  # and at 256 px, from scratch-canon
MIX["scratch-kv"] = MIX["bind-canon"]  # and with KV compression on blocks 4-7, from scratch-hires
# scratch-aspect: scratch-hires' square worlds plus the same five worlds drawn at the four other 256 px bucket sizes
# (`*-aspect`, about half the size of the square ones, so twice as often), about 45% of each epoch not square.
MIX["scratch-aspect"] = (
    *MIX["bind-canon"],
    ("cache-pair2-256-canon-aspect-v5", 2),
    ("cache-lesson-256-snap-aspect-v5", 4),
    ("cache-centre-256-aspect-v5", 2),
    ("cache-pair-256-canon-aspect-v5", 2),
    ("cache-multi-256-canon-aspect-v5", 2),
)
# aspect-canon and aspect-hires: the scratch line again, from scratch, on scratch-aspect's square and non-square
# worlds from the first step (at 128 px, then at 256 px), so that every stage trains on multi-aspect buckets.
MIX["aspect-canon"] = tuple((cache.replace("-256", "-128"), times) for cache, times in MIX["scratch-aspect"])
MIX["aspect-hires"] = MIX["scratch-aspect"]
MIX["aspect-kv"] = MIX["scratch-aspect"]  # and with KV compression on blocks 4-7, from aspect-hires
# The grow stage: draw-hires' EMA deepened from 8 to 12 blocks, an identity block after each odd one
# (pixart.demo.grow), so that deep-hires trains a 13.3M-parameter model from where the 9.1M one stopped.
GROW_FROM = ("draw-hires", "final")
GROW_AFTER = (1, 3, 5, 7)
TEXT_ENCODER_V2 = ("--word-identity-weight", "1.0", "--context-invariance-weight", "1.0", "--threads", "2")
# The fourth T5: the second's weights fine-tuned with the layout loss (each name's pieces predict its object's cell,
# size and ranks from the top and the left), context invariance on the first 128 of 256 channels, and two heads
# given a head start towards the word before and the word after (the trained T5s were nearly blind to word order);
# the same tokenizer.
TEXT_ENCODER_V4 = (
    *TEXT_ENCODER_V2,
    *("--layout-weight", "2.0", "--invariant-dims", "128", "--steps", "400", "--lr", "1e-3", "--warmup", "50"),
    *("--position-init", "0:-1:10,2:1:10", "--position-lr-mult", "10"),
)
# The fifth T5: the fourth's recipe with the first 128 channels also held to the second T5's outputs (keep_loss),
# so that the names stay as far apart as the second's while the layout loss gives them roles and sizes.
TEXT_ENCODER_V5 = (*TEXT_ENCODER_V4, "--keep-dims", "128", "--keep-weight", "2")
# The base stage as it ran: one run (`runs/demo/dit-base-v5`, forked at 12,800 as `dit-base-v5-high`), resumed
# with these settings up to each step. The share of each batch redrawn at t >= 800/900 came in once the uniform-t
# run, at 12,800 steps, still drew the flat background at high noise (docs/demo-model.md); bf16 autocast from 5,000
# (the host had AVX-512 BF16; `--set base.mixed_precision=no` elsewhere). A `--set base.max_steps=N` stops it at N.
BASE_SEGMENTS = (
    (5000, ()),
    (12800, ("mixed_precision=bf16",)),
    (16000, ("mixed_precision=bf16", "timestep_high_fraction=0.5", "timestep_high_from=800")),
    (22000, ("mixed_precision=bf16", "timestep_high_fraction=0.5", "timestep_high_from=900")),
    (23000, ("mixed_precision=bf16", "timestep_high_fraction=0.75", "timestep_high_from=900")),
)

# (width, height) of the exported scenes: the exact bucket sizes of each stage's table, so no crop cuts an emoji.
SIZES_128 = ((128, 128), (160, 96), (96, 160), (144, 112), (112, 144))
SIZES_256 = ((256, 256), (320, 192), (192, 320), (288, 224), (224, 288))
SCENES = {
    "data-128": 12000,
    "data-256": 4000,
    "data-lesson": 3000,
    "data-centre": 2000,
    "data-lesson-256": 1500,
    "data-pair": 3000,
    "data-pair-256": 1500,
    "data-centre-256": 1000,
    "data-lesson-256-snap": 2000,
    "data-pair-256-snap": 2000,
    "data-pair-256-canon": 2000,
    "data-multi-256-canon": 2000,
    "data-pair2-256-canon": 4000,
    "data-lesson-256-snap-aspect": 1000,
    "data-centre-256-aspect": 500,
    "data-pair-256-canon-aspect": 1000,
    "data-multi-256-canon-aspect": 1000,
    "data-pair2-256-canon-aspect": 1000,
}
SMOKE_SCENES = {
    "data-128": 24,
    "data-256": 12,
    "data-lesson": 12,
    "data-centre": 12,
    "data-lesson-256": 12,
    "data-pair": 12,
    "data-pair-256": 12,
    "data-centre-256": 12,
    "data-lesson-256-snap": 12,
    "data-pair-256-snap": 12,
    "data-pair-256-canon": 12,
    "data-multi-256-canon": 12,
    "data-pair2-256-canon": 12,
    "data-lesson-256-snap-aspect": 12,
    "data-centre-256-aspect": 12,
    "data-pair-256-canon-aspect": 12,
    "data-multi-256-canon-aspect": 12,
    "data-pair2-256-canon-aspect": 12,
}
