"""`pixart generate`: files and PNG metadata, seeds, never overwriting, and one clear line per bad input."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

from pixart.cli import main
from pixart.png import format_parameters, parse_parameters, read_parameters
from pixart.text import PromptEmbeddings
from tests.test_pipeline import make_tiny, one_thread, write_pipeline_folder  # noqa: F401 (autouse fixture)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("cli")
    return write_pipeline_folder(make_tiny(root), root / "PixArt-Tiny")


def generate(capsys, *args) -> tuple[int, list[str], str]:
    code = main(["generate", *map(str, args)])
    out, err = capsys.readouterr()
    return code, out.splitlines(), err


def _pixels(path) -> torch.Tensor:
    return torch.tensor(list(Image.open(path).getdata()), dtype=torch.float32)


# ---- images and metadata ------------------------------------------------------------------------------------------


def test_writes_a_png_with_its_parameters(model_dir, tmp_path, capsys):
    out = tmp_path / "cat.png"
    code, printed, _ = generate(
        capsys,
        "a cat on a red sofa",
        "--model",
        model_dir,
        "--size",
        "96x64",
        "--steps",
        2,
        "--seed",
        7,
        "--negative",
        "blurry, dark",
        "--out",
        out,
    )
    assert code == 0 and printed == [str(out)]
    image = Image.open(out)
    assert image.size == (96, 64)
    prompt, negative, settings = parse_parameters(read_parameters(out))
    assert (prompt, negative) == ("a cat on a red sofa", "blurry, dark")
    assert settings == {
        "Steps": "2",
        "Sampler": "dpm-solver++",
        "CFG scale": "4.5",
        "Seed": "7",
        "Size": "96x64",
        "Model": "PixArt-Tiny",
    }


def test_png_parameters_round_trip():
    settings = {
        "Steps": "20",
        "Sampler": "sa-solver",
        "CFG scale": "3.0",
        "Seed": "1",
        "Size": "64x64",
        "Model": 'odd: "name", v2',
    }
    text = format_parameters("line one\nline two", "", settings)
    assert "Negative prompt" not in text  # left out when empty, as A1111 does
    assert parse_parameters(text) == ("line one\nline two", "", settings)
    assert parse_parameters(format_parameters("p", "n1\nn2", settings)) == ("p", "n1\nn2", settings)


def test_image_k_uses_seed_plus_k_and_regenerates_alone(model_dir, tmp_path, capsys):
    code, printed, _ = generate(
        capsys,
        "a cat",
        "a lighthouse",
        "--model",
        model_dir,
        "--n",
        2,
        "--steps",
        2,
        "--seed",
        10,
        "--out",
        tmp_path / "run",
    )
    assert code == 0 and len(printed) == 4
    seeds = [parse_parameters(read_parameters(p))[2]["Seed"] for p in printed]
    prompts = [parse_parameters(read_parameters(p))[0] for p in printed]
    assert seeds == ["10", "11", "12", "13"] and prompts == ["a cat", "a cat", "a lighthouse", "a lighthouse"]
    assert [Path(p).name[:5] for p in printed] == ["00000", "00001", "00002", "00003"]
    code, again, _ = generate(
        capsys, "a lighthouse", "--model", model_dir, "--steps", 2, "--seed", 13, "--out", tmp_path / "run"
    )
    assert Path(again[0]).name.startswith("00004-13-")  # numbered after the existing files, nothing replaced
    assert torch.equal(_pixels(again[0]), _pixels(printed[3]))


def test_never_overwrites_without_force(model_dir, tmp_path, capsys):
    out = tmp_path / "x.png"
    assert generate(capsys, "a cat", "--model", model_dir, "--steps", 1, "--seed", 1, "--out", out)[0] == 0
    before = out.read_bytes()
    code, printed, err = generate(capsys, "a dog", "--model", model_dir, "--steps", 1, "--seed", 2, "--out", out)
    assert code == 2 and printed == [] and "exists; pass --force" in err and out.read_bytes() == before
    code, printed, _ = generate(
        capsys, "a dog", "--model", model_dir, "--steps", 1, "--seed", 2, "--out", out, "--force"
    )
    assert code == 0 and printed == [str(out)] and out.read_bytes() != before


def test_embeddings_encode_once_generate_many(model_dir, tmp_path, capsys):
    emb = tmp_path / "prompts.safetensors"
    code, printed, _ = generate(
        capsys, "a cat", "a fox", "--model", model_dir, "--negative", "dark", "--save-embeddings", emb
    )
    assert code == 0 and printed == [str(emb)] and PromptEmbeddings.load(emb).prompts == ["a cat", "a fox"]
    no_t5 = tmp_path / "no-t5"
    shutil.copytree(model_dir, no_t5, ignore=shutil.ignore_patterns("text_encoder", "tokenizer"))
    code, from_file, _ = generate(
        capsys, "--embeddings", emb, "--model", no_t5, "--steps", 2, "--seed", 4, "--out", tmp_path / "a"
    )
    assert code == 0 and len(from_file) == 2
    code, direct, _ = generate(
        capsys,
        "a cat",
        "a fox",
        "--model",
        model_dir,
        "--negative",
        "dark",
        "--steps",
        2,
        "--seed",
        4,
        "--out",
        tmp_path / "b",
    )
    for a, b in zip(from_file, direct, strict=True):
        assert (_pixels(a) - _pixels(b)).abs().max() <= 1  # same image up to 8-bit rounding
        assert read_parameters(a).replace("no-t5", "PixArt-Tiny") == read_parameters(b)


def test_aspect_and_kv_compression(model_dir, tmp_path, capsys, caplog):
    out = tmp_path / "wide.png"
    code, _, _ = generate(
        capsys,
        "a lighthouse",
        "--model",
        model_dir,
        "--aspect",
        "16:9",
        "--steps",
        1,
        "--seed",
        0,
        "--kv-compress",
        "--kv-layers",
        "1",
        "--out",
        out,
    )
    assert code == 0
    assert Image.open(out).size == (80, 48)  # the closest bin for a 64 px model: 16:9 -> h/w 0.57
    assert parse_parameters(read_parameters(out))[2]["KV compress"] == "blocks 1, factor 2, conv"
    assert "costs some image quality" in caplog.text


# ---- bad input: one line, exit 2, nothing written -------------------------------------------------------------------

BAD = [
    (["--size", "100x64"], "--size 100x64: width 100 is not allowed; each side must be a multiple of 16"),
    (["--size", "0x64"], "width 0 is not allowed"),
    (["--size=-16x64"], "width -16 is not allowed"),
    (["--size", "16384x16384"], "width 16384 is not allowed; each side must be a multiple of 16 from 16 to 8192"),
    (["--size", "big"], "--size 'big': expected WIDTHxHEIGHT"),
    (["--steps", "0"], "--steps 0: must be an integer >= 1"),
    (["--steps", "2.5"], "--steps '2.5': must be an integer >= 1"),
    (["--cfg", "nan"], "--cfg nan: must be a finite number >= 0"),
    (["--cfg", "-1"], "--cfg -1: must be a finite number >= 0"),
    (["--sampler", "plms"], "unknown sampler 'plms'; allowed: dpm-solver++, sa-solver, ddim, euler, iddpm"),
    (["--n", "0"], "--n 0: must be an integer from 1"),
    (["--seed", "-3"], "--seed -3: must be an integer from 0"),
    (["--aspect", "0:9"], "--aspect '0:9': expected W:H with positive numbers"),
    (["--dtype", "fp64"], "--dtype 'fp64': allowed are auto, fp32"),
    (["--device", "tpu"], "--device 'tpu': allowed are auto, cpu, cuda, cuda:N, mps"),
    (["--kv-compress", "--kv-factor", "1"], "--kv-factor 1: must be an integer >= 2"),
    (["--kv-compress", "--kv-layers", "9"], "--kv-layers [9]: this model has blocks 0..1"),
    (["--kv-sampling", "max"], "--kv-sampling 'max': allowed are conv"),
    (["--tile-vae", "maybe"], "--tile-vae 'maybe': allowed are auto, on, off"),
    (["--cfg-semantics", "a1111"], "--cfg-semantics 'a1111': allowed are diffusers, official"),
    (["--dtype", "fp16", "--device", "cpu"], "--dtype fp16 is not supported on the CPU"),
]


@pytest.mark.parametrize("flags,message", BAD, ids=[" ".join(f) for f, _ in BAD])
def test_bad_flags(model_dir, tmp_path, capsys, flags, message):
    out = tmp_path / "out"
    code, printed, err = generate(capsys, "a cat", "--model", model_dir, "--out", out, *flags)
    assert code == 2 and printed == []
    lines = err.strip().splitlines()
    assert lines == [lines[-1]] and lines[0].startswith("error: ") and message in lines[0], err
    assert not out.exists()


def test_bad_paths(model_dir, tmp_path, capsys):
    broken = tmp_path / "broken"
    shutil.copytree(model_dir, broken, ignore=shutil.ignore_patterns("vae"))
    (tmp_path / "empty.txt").write_text("\n  \n# only a comment\n")
    (tmp_path / "file").write_text("x")
    cases = [
        (["a cat", "--model", tmp_path / "nope"], "does not exist"),
        (["a cat", "--model", broken], "has no vae/; a PixArt-Σ pipeline folder has transformer/"),
        (["a cat", "--model", model_dir / "transformer"], "pass --text-encoder DIR and --vae DIR"),
        (["--prompts-file", tmp_path / "empty.txt", "--model", model_dir], "has no prompts"),
        (["--prompts-file", tmp_path / "missing.txt", "--model", model_dir], "does not exist"),
        (["--model", model_dir], "no prompt: give PROMPT text"),
        (["a cat", "--model", model_dir, "--out", tmp_path / "file" / "sub"], "is a file"),
        (["a cat", "--model", model_dir, "--out", tmp_path / "file"], "exists and is not a folder"),
        (["a cat", "--model", model_dir, "--embeddings", tmp_path / "none.st"], "give prompts or --embeddings"),
    ]
    for args, message in cases:
        code, printed, err = generate(capsys, *args)
        assert code == 2 and printed == [] and len(err.strip().splitlines()) == 1 and message in err, (args, err)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["broken", "empty.txt", "file"]  # nothing written


def test_no_model_and_nothing_bundled(capsys, monkeypatch, tmp_path):
    monkeypatch.setattr("pixart.commands.generate.BUNDLED_MODEL", tmp_path / "assets" / "demo")
    code, _, err = generate(capsys, "a cat")
    assert code == 2 and "no model is bundled with this version yet: pass --model PATH" in err


def test_memory_refusal_names_a_flag(model_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("pixart.pipeline.available_memory", lambda device: 1 << 20)
    code, printed, err = generate(capsys, "a cat", "--model", model_dir, "--out", tmp_path / "o")
    assert code == 2 and printed == [] and "not enough memory" in err and "--skip-memory-check" in err
    assert not (tmp_path / "o").exists()


def test_importing_the_command_does_not_import_torch():
    code = "import sys, pixart.cli; pixart.cli.build_parser(); print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"


def test_lora_files_merge_with_their_scale(model_dir, tmp_path, capsys):
    from pixart.checkpoint import load_transformer
    from pixart.train.lora import add_lora, save_lora

    model = load_transformer(model_dir / "transformer")
    add_lora(model, rank=2)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5, generator=torch.Generator().manual_seed(0))
    lora = tmp_path / "style.safetensors"
    save_lora(model, lora)
    common = ["a cat", "--model", model_dir, "--size", "64x64", "--steps", 2, "--seed", 3]
    outs = {}
    for name, extra in [("plain", []), ("zero", ["--lora", lora, "--lora-scale", 0]), ("full", ["--lora", lora])]:
        code, printed, _ = generate(capsys, *common, *extra, "--out", tmp_path / f"{name}.png")
        assert code == 0, printed
        outs[name] = _pixels(tmp_path / f"{name}.png")
    assert torch.equal(outs["plain"], outs["zero"])
    assert not torch.equal(outs["plain"], outs["full"])
    assert 'LoRA: "style.safetensors:1"' in read_parameters(tmp_path / "full.png")
    code, _, err = generate(capsys, *common, "--lora", tmp_path / "none.safetensors", "--out", tmp_path / "x.png")
    assert code == 2 and "--lora" in err and "does not exist" in err and not (tmp_path / "x.png").exists()
    code, _, err = generate(capsys, *common, "--lora", lora, "--lora-scale", "nan", "--out", tmp_path / "x.png")
    assert code == 2 and "--lora-scale nan: must be a finite number" in err
