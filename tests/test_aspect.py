"""Aspect-ratio bins (the reference's 40-ratio tables) and size parsing."""

from __future__ import annotations

import pytest

from pixart.aspect import ASPECT_RATIOS, bins_for, check_size, closest_bin, parse_aspect, parse_size, size_for_aspect


def test_tables_hold_the_reference_values():
    assert sorted(ASPECT_RATIOS) == [256, 512, 1024, 2048, 2880]
    assert all(len(table) == 40 for table in ASPECT_RATIOS.values())
    # Spot values (REFERENCE.md §1.7), as [H, W].
    assert ASPECT_RATIOS[1024]["1.0"] == (1024, 1024)
    assert ASPECT_RATIOS[1024]["0.57"] == (768, 1344) and ASPECT_RATIOS[1024]["0.6"] == (768, 1280)
    assert ASPECT_RATIOS[1024]["1.75"] == (1344, 768)
    assert ASPECT_RATIOS[1024]["0.25"] == (512, 2048) and ASPECT_RATIOS[1024]["4.0"] == (2048, 512)
    assert ASPECT_RATIOS[2048]["0.6"] == (1536, 2560) and ASPECT_RATIOS[2048]["1.67"] == (2560, 1536)
    assert ASPECT_RATIOS[2048]["4.0"] == (4096, 1024)
    assert ASPECT_RATIOS[2880]["0.55"] == (2112, 3840) and ASPECT_RATIOS[2880]["1.82"] == (3840, 2112)
    assert ASPECT_RATIOS[2880]["0.25"] == (1408, 5760) and ASPECT_RATIOS[2880]["4.0"] == (5760, 1408)
    assert ASPECT_RATIOS[512]["1.0"] == (512, 512) and ASPECT_RATIOS[256]["0.26"] == (128, 496)
    assert ASPECT_RATIOS[512]["2.89"] == (832, 288)


def test_every_bin_is_a_valid_size_near_its_ratio():
    for base, table in ASPECT_RATIOS.items():
        for key, (h, w) in table.items():
            assert h % 16 == 0 and w % 16 == 0, (base, key)
            assert abs(h / w - float(key)) < 0.05 * float(key), (base, key)
        ratios = [float(k) for k in table]
        assert ratios == sorted(ratios) and ratios[0] == 0.25 and ratios[-1] == 4.0


def test_closest_bin():
    table = ASPECT_RATIOS[1024]
    assert closest_bin(1, 1, table) == (1024, 1024)
    assert closest_bin(9, 16, table) == (768, 1344)  # h/w 0.5625 -> '0.57'
    assert closest_bin(16, 9, table) == (1344, 768)  # 1.78 -> '1.75'
    assert closest_bin(1, 100, table) == (512, 2048)  # clamps to the extreme bins
    assert closest_bin(3840 / 2560 * 1000, 1000, ASPECT_RATIOS[2880]) == (3392, 2304)  # 1.5 -> '1.47'


def test_size_for_aspect_is_width_by_height():
    assert size_for_aspect("16:9", 1024) == (1344, 768)  # landscape, as --size WxH
    assert size_for_aspect("9:16", 1024) == (768, 1344)
    assert size_for_aspect("1:1", 2048) == (2048, 2048)
    assert size_for_aspect("3:2", 512) == (608, 416)  # h/w 0.667 -> '0.68'
    assert size_for_aspect("1.5", 512) == size_for_aspect("3/2", 512) == size_for_aspect("3:2", 512)


def test_unreleased_native_sizes_scale_the_nearest_table():
    table = bins_for(64)  # a tiny test model
    assert table["1.0"] == (64, 64)
    assert all(h % 16 == 0 and w % 16 == 0 and h >= 16 and w >= 16 for h, w in table.values())
    assert bins_for(1024) is ASPECT_RATIOS[1024]


@pytest.mark.parametrize("text", ["0:1", "16:-9", "abc", "1:2:3", "nan:1", "10:1", ""])
def test_bad_aspects(text):
    with pytest.raises(ValueError, match="--aspect"):
        parse_aspect(text)


def test_sizes():
    assert parse_size("1024x768") == (1024, 768) and parse_size("64X96") == (64, 96)
    check_size(3840, 2560)
    for text, what in [
        ("100x64", "width 100"),
        ("64x0", "height 0"),
        ("-16x64", "width -16"),
        ("16384x16", "width 16384"),
        ("64x72", "height 72"),
    ]:
        with pytest.raises(ValueError, match=f"--size {text}: {what} is not allowed; each side must be a multiple"):
            parse_size(text)
    with pytest.raises(ValueError, match="expected WIDTHxHEIGHT"):
        parse_size("1024")
