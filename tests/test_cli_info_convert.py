"""`pixart info` and `pixart convert`, run in-process through `pixart.cli.main` (plus one real subprocess)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from pixart.checkpoint import load_transformer, save_transformer
from pixart.cli import main
from tests.test_checkpoint import assert_same_weights, no_temp_files, tiny_model

XL2_PARAMETERS = "610,856,096"  # PixArt-Σ XL/2 (REFERENCE.md §5)


def cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(code: int, err: str, *needles: str) -> None:
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    for needle in needles:
        assert needle in lines[0]


# ---- info ----------------------------------------------------------------------------------------------------------


def test_info_preset_prints_every_field_and_parameter_count(capsys):
    code, out, _ = cli(capsys, "info", "PixArt-Sigma-XL-2-1024-MS")
    assert code == 0
    assert f"parameters: {XL2_PARAMETERS}" in out
    for field in ("depth", "hidden_size", "num_heads", "pe_interpolation", "sample_size", "kv_compress_layers"):
        assert field in out
    code, out, _ = cli(capsys, "info", "PixArt-Sigma-XL-2-1024-MS-KV", "--json")
    info = json.loads(out)
    assert info["parameters"] == 610_968_992  # + 14 depthwise convs and LayerNorms
    assert info["config"]["kv_compress_layers"] == list(range(14, 28))


@pytest.mark.parametrize("to", ["pixart", "diffusers", "official"])
def test_info_file_reports_format_dtype_and_count(tmp_path, capsys, to):
    model = tiny_model(kv_compress_layers=(1,), kv_compress_factor=2).to(torch.bfloat16)
    src = save_transformer(model, tmp_path / "m.safetensors")
    path = {"pixart": src, "diffusers": tmp_path / "d", "official": tmp_path / "o.pth"}[to]
    if to != "pixart":
        assert cli(capsys, "convert", src, path, "--to", to)[0] == 0
    code, out, _ = cli(capsys, "info", path, "--json")
    assert code == 0
    info = json.loads(out)
    assert info["format"] == to and info["dtype"] == "bfloat16"
    assert info["parameters"] == model.num_parameters()
    if to != "official":  # an official file carries no config: heads and PE are assumed
        assert info["config"] == model.cfg.to_dict()


def test_info_errors(capsys, monkeypatch, tmp_path):
    monkeypatch.setattr("pixart.commands.generate.BUNDLED_MODEL", tmp_path / "none")
    assert_one_line_error(*cli(capsys, "info")[::2], "no model is bundled yet", "preset")
    assert_one_line_error(*cli(capsys, "info", "PixArt-Nope")[::2], "PixArt-Nope", "PixArt-Sigma-XL-2-1024-MS")


def test_info_in_a_real_subprocess():
    root = Path(__file__).resolve().parents[1]
    result = subprocess.run(
        [sys.executable, "-m", "pixart.cli", "info", "PixArt-Sigma-XL-2-1024-MS"],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert XL2_PARAMETERS in result.stdout


# ---- convert -------------------------------------------------------------------------------------------------------


def test_convert_both_ways(tmp_path, capsys):
    model = tiny_model(micro_condition=True, max_tokens=6)
    src = save_transformer(model, tmp_path / "m.safetensors")
    code, out, _ = cli(capsys, "convert", src, tmp_path / "d", "--to", "diffusers")
    assert code == 0 and "wrote diffusers checkpoint" in out
    assert cli(capsys, "convert", tmp_path / "d", tmp_path / "back.safetensors", "--to", "pixart")[0] == 0
    assert_same_weights(load_file(tmp_path / "back.safetensors"), model.state_dict())
    assert load_transformer(tmp_path / "back.safetensors").cfg == model.cfg

    assert cli(capsys, "convert", src, tmp_path / "o.pth", "--to", "official")[0] == 0
    argv = ["convert", tmp_path / "o.pth", tmp_path / "o.safetensors", "--to", "pixart", "--sample-size", "16"]
    assert cli(capsys, *argv, "--pe-interpolation", "0.25")[0] == 0
    loaded = load_transformer(tmp_path / "o.safetensors")
    assert (loaded.cfg.sample_size, loaded.cfg.pe_interpolation) == (16, 0.25)
    assert_same_weights(loaded.state_dict(), model.state_dict())


def test_convert_dtype_and_force(tmp_path, capsys):
    src = save_transformer(tiny_model(), tmp_path / "m.safetensors")
    dst = tmp_path / "half.safetensors"
    assert cli(capsys, "convert", src, dst, "--to", "pixart", "--dtype", "fp16")[0] == 0
    assert {t.dtype for t in load_file(dst).values()} == {torch.float16}
    assert_one_line_error(*cli(capsys, "convert", src, dst, "--to", "pixart")[::2], str(dst), "--force")
    assert cli(capsys, "convert", src, dst, "--to", "pixart", "--dtype", "bf16", "--force")[0] == 0
    assert {t.dtype for t in load_file(dst).values()} == {torch.bfloat16}
    assert no_temp_files(tmp_path)


def test_convert_bad_inputs_exit_2_with_one_line(tmp_path, capsys):
    out = tmp_path / "out.safetensors"
    assert_one_line_error(*cli(capsys, "convert", tmp_path / "nope.pth", out, "--to", "pixart")[::2], "nope.pth")
    (tmp_path / "bad.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{broken")
    argv = ["convert", tmp_path / "bad.safetensors", out, "--to", "pixart"]
    assert_one_line_error(*cli(capsys, *argv)[::2], "bad.safetensors", "corrupt")
    (tmp_path / "notes.txt").write_text("hello")
    assert_one_line_error(*cli(capsys, "convert", tmp_path / "notes.txt", out, "--to", "pixart")[::2], "unknown")
    src = save_transformer(tiny_model(), tmp_path / "m.safetensors")
    assert_one_line_error(*cli(capsys, "convert", src, tmp_path / "o.bin", "--to", "official")[::2], ".pth")
    assert_one_line_error(*cli(capsys, "convert", src, out, "--to", "pixart", "--preset", "Nope")[::2], "Nope")
    assert not out.exists() and no_temp_files(tmp_path)
