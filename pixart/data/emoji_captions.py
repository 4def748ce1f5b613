"""Captions of emoji-world scenes: a short prompt and a dense multi-sentence description, as PixArt mixes them.

`short_caption` ("a red apple next to a small cat on a blue background") and `long_caption` (the background, every
object with its size and cell, counts and relations) read a `pixart.data.emoji.Scene`; names and plurals come from
the vocabulary (`pixart.data.emoji_vocab`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pixart.data.emoji_vocab import BY_NAME, POSITIONS, EmojiEntry

if TYPE_CHECKING:
    from pixart.data.emoji import Scene, SceneObject

_WHERE = {
    p: ("on the " if p in ("left", "right") else "in the " if p == "center" else "at the ") + p for p in POSITIONS
}
_NUMBER_WORDS = {1: "a", 2: "two", 3: "three"}
_SIZE_WORDS_LONG = {"small": "small", "medium": "medium-sized", "large": "large"}


def _article(words: str) -> str:
    return "an" if words[0] in "aeiou" and not words.startswith("uni") else "a"


def _noun_phrase(name: str, count: int, size_word: str | None = None) -> str:
    """'a large owl', 'two cats', 'three small mice'; the medium size is left unsaid."""
    entry: EmojiEntry | None = BY_NAME.get(name)
    noun = name if count == 1 else entry.plural_name if entry else name + "s"
    words = f"{size_word} {noun}" if size_word and size_word != "medium" else noun
    return f"{_article(words) if count == 1 else _NUMBER_WORDS[count]} {words}"


def _join(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def _relation(a: SceneObject, b: SceneObject) -> tuple[SceneObject, str, SceneObject]:
    """Order a pair along its dominant axis: (left, 'to the left of', right) or (upper, 'above', lower)."""
    if abs(a.x - b.x) >= abs(a.y - b.y):
        return (a, "to the left of", b) if a.x <= b.x else (b, "to the left of", a)
    return (a, "above", b) if a.y <= b.y else (b, "above", a)


def _groups(scene: Scene) -> list[tuple[str, int, str]]:
    """(name, count, size word) per kind, ordered left to right by the kind's leftmost instance."""
    counts = scene.counts()
    first = {name: min((o for o in scene.objects if o.name == name), key=lambda o: o.x) for name in counts}
    order = sorted(counts, key=lambda n: (first[n].x, first[n].y))
    return [(n, counts[n], first[n].size_word) for n in order]


def short_caption(scene: Scene) -> str:
    """A short prompt: 'a red apple next to a small cat on a blue background'."""
    background = f"{_article(scene.background)} {scene.background} background"
    objs = scene.objects
    if len(objs) == 1:
        o = objs[0]
        return f"{_noun_phrase(o.name, 1, o.size_word)} {_WHERE[o.position]} of {background}"
    if len(objs) == 2 and objs[0].name != objs[1].name:
        first, rel, second = _relation(*objs)
        word = "next to" if rel == "to the left of" else rel
        a, b = _noun_phrase(first.name, 1, first.size_word), _noun_phrase(second.name, 1, second.size_word)
        return f"{a} {word} {b} on {background}"
    return f"{_join([_noun_phrase(*g) for g in _groups(scene)])} on {background}"


def long_caption(scene: Scene) -> str:
    """A dense description: background, every object with its size and position, counts and relations."""
    groups = _groups(scene)
    summary = _join([_noun_phrase(n, c) for n, c, _ in groups])
    if len(scene.objects) == 1:
        summary = f"a single {scene.objects[0].name}"
    sentences = [f"The image shows {summary} on a plain {scene.background} background."]
    for o in sorted(scene.objects, key=lambda o: (POSITIONS.index(o.position) // 3, o.x)):
        words = f"{_SIZE_WORDS_LONG[o.size_word]} {o.name}"
        sentences.append(f"{_WHERE[o.position].capitalize()} there is {_article(words)} {words}.")
    for name, count, _ in groups:
        if count > 1:
            sentences.append(f"There are {_NUMBER_WORDS[count]} {BY_NAME[name].plural_name} in total.")
    singles = [o for o in scene.objects if scene.counts()[o.name] == 1]
    for i, a in enumerate(singles):
        for b in singles[i + 1 :]:
            first, rel, second = _relation(a, b)
            sentences.append(f"The {first.name} is {rel} the {second.name}.")
    return " ".join(sentences)
