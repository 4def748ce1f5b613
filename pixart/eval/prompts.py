"""The fixed, seeded prompt set of `pixart eval`: emoji-world scenes held out from every training set.

Prompt i of set `seed` is the scene `sample_scene(eval_scene_seed(seed, i), width, height)` and its caption. The
seeds come from a three-word `SeedSequence` entropy ([EVAL_TAG, seed, i]), a stream no dataset export draws from
(`scene_seed` uses two words), so the eval scenes are not training scenes. The set is a stream: the first N prompts
are the same whatever N (`pixart.eval.SUBSETS` names a few sizes). Scenes are drawn at the size the images are
generated at, so "at the top left" means the same grid cell in both.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pixart.data.emoji import Scene, long_caption, sample_scene, short_caption

EVAL_TAG = 0x6E76_A1  # first entropy word of every eval scene seed
CAPTIONS = ("short", "long")
KINDS = ("single", "pair", "count", "multi")


@dataclass(frozen=True)
class EvalPrompt:
    """One prompt of the set: its index, the scene it describes and the caption given to the generator."""

    index: int
    scene: Scene
    prompt: str
    caption: str = "short"  # which caption style `prompt` is: short | long (decides the position checks)

    @property
    def kind(self) -> str:
        """single (one object) | pair (two different ones) | count (one kind, repeated) | multi (the rest)."""
        return prompt_kind(self.scene)


def prompt_kind(scene: Scene) -> str:
    """The GenEval-like task a scene tests (see `EvalPrompt.kind`)."""
    counts = scene.counts()
    if len(scene.objects) == 1:
        return "single"
    if len(counts) == 1:
        return "count"
    return "pair" if len(scene.objects) == 2 else "multi"


def eval_scene_seed(seed: int, index: int) -> int:
    """Seed of eval scene `index` of set `seed` (an independent stream, disjoint from `emoji.scene_seed`)."""
    return int(np.random.SeedSequence([EVAL_TAG, seed, index]).generate_state(1, np.uint64)[0] >> np.uint64(1))


def prompt_set(n: int, width: int, height: int, *, seed: int = 0, caption: str = "short") -> list[EvalPrompt]:
    """The first `n` prompts of eval set `seed`, for images of (width, height).

    Args:
        caption: "short" (the default prompt style, as `pixart generate` users write) or "long" (dense description).
    """
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"number of prompts must be an integer >= 1, got {n!r}")
    if not isinstance(seed, int) or seed < 0:
        raise ValueError(f"prompt-set seed must be an integer >= 0, got {seed!r}")
    if caption not in CAPTIONS:
        raise ValueError(f"caption {caption!r}: allowed are {', '.join(CAPTIONS)}")
    describe = short_caption if caption == "short" else long_caption
    prompts = []
    for i in range(n):
        scene = sample_scene(eval_scene_seed(seed, i), width, height)
        prompts.append(EvalPrompt(i, scene, describe(scene), caption))
    return prompts
