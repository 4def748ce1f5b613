"""scripts/pair_blend.py: the colour of each half of a pair picture, on analytic images."""

import importlib.util
from pathlib import Path

import numpy as np

_spec = importlib.util.spec_from_file_location("pair_blend", Path(__file__).parents[1] / "scripts" / "pair_blend.py")
pair_blend = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(pair_blend)


def _two_squares(axis: int) -> np.ndarray:
    image = np.full((64, 64, 3), 255.0)  # white background
    first, second = (slice(24, 40), slice(4, 20)), (slice(24, 40), slice(44, 60))  # left, right
    if axis == 0:  # one above the other
        first, second = first[::-1], second[::-1]
    image[first] = (200.0, 0.0, 0.0)
    image[second] = (0.0, 0.0, 200.0)
    return image


def test_halves_finds_each_objects_colour_along_the_relations_axis():
    for axis in (0, 1):
        first, second = pair_blend.halves(_two_squares(axis), np.full(3, 255.0), axis)
        np.testing.assert_allclose(first, (200.0, 0.0, 0.0))
        np.testing.assert_allclose(second, (0.0, 0.0, 200.0))


def test_halves_gives_the_same_colour_twice_for_a_blend_and_none_for_an_empty_picture():
    image = _two_squares(1)
    image[image[..., 0] < 255] = 100.0  # both squares the same grey
    first, second = pair_blend.halves(image, np.full(3, 255.0), 1)
    assert np.linalg.norm(first - second) == 0.0
    assert pair_blend.halves(np.full((64, 64, 3), 255.0), np.full(3, 255.0), 1) is None
