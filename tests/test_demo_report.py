"""`python -m pixart.demo.report`: which weights each run scores, and the summary table it writes."""

from __future__ import annotations

import json

import pytest

from pixart.demo.report import RUNS, eval_command, main, stage_weights, write_summary


def _run(name):
    return next(r for r in RUNS if r.name == name)


def test_a_stage_is_scored_from_its_final_weights_else_its_snapshot_else_skipped(tmp_path):
    run_dir = tmp_path / "dit-hires"
    run_dir.mkdir()
    assert stage_weights(tmp_path, "hires") is None
    assert eval_command(_run("hires"), tmp_path, tmp_path / "package", "small") is None

    (run_dir / "latest.safetensors").write_bytes(b"")
    (run_dir / "latest.json").write_text(json.dumps({"step": 700}))
    command, title = eval_command(_run("hires-kv-free"), tmp_path, tmp_path / "package", "small")
    assert command[:3] == ["eval", "--model", str(run_dir / "latest.safetensors")]
    assert command[command.index("--vae") + 1] == str(tmp_path / "export" / "vae")
    assert "--kv-compress" in command and command[command.index("--subset") + 1] == "small"
    assert command[command.index("--out") + 1] == str(tmp_path / "eval" / "hires-kv-free")
    assert "step 700, still training" in title

    (run_dir / "final.safetensors").write_bytes(b"")
    command, title = eval_command(_run("hires"), tmp_path, tmp_path / "package", "small")
    assert command[2] == str(run_dir / "final.safetensors") and "step" not in title
    assert "--size" not in command  # no run config: the transformer's own sample size


def test_a_stage_is_scored_at_the_resolution_it_trained_at(tmp_path):
    run_dir = tmp_path / "dit-layout-mix"  # a 128 px stage from a 256 px model: its sample size says 256
    run_dir.mkdir()
    (run_dir / "final.safetensors").write_bytes(b"")
    (run_dir / "config.json").write_text(json.dumps({"data": {"resolution": 128}}))
    command, _ = eval_command(_run("layout-mix"), tmp_path, tmp_path / "package", "small")
    assert command[command.index("--size") + 1] == "128x128"
    assert command[command.index("--text-encoder") + 1] == str(tmp_path / "export-v4")


def test_package_runs_need_a_packaged_model(tmp_path):
    package = tmp_path / "package"
    assert eval_command(_run("package-sa"), tmp_path, package, "standard") is None
    package.mkdir()
    (package / "model_index.json").write_text("{}")
    command, _ = eval_command(_run("package-sa"), tmp_path, package, "standard")
    assert command[1:3] == ["--model", str(package)] and "--text-encoder" not in command
    assert command[command.index("--sampler") + 1] == "sa-solver"


def _report(overall: float) -> dict:
    checks = ("background", "identity", "count", "position")
    categories = {c: {"passed": 1, "total": 2, "accuracy": 0.5} for c in checks}
    summary = {"images": 2, "passed": int(overall * 2), "overall": overall, "mean": 0.5, "categories": categories,
               "kinds": {}}  # fmt: skip
    settings = {"sampler": "ddim", "steps": 50, "cfg": 4.5, "size": "256x256", "prompts": 2}
    return {"settings": settings, "summary": summary, "title": "package, ddim 50 steps", "seconds_per_image": 0.25}


def test_summary_has_one_column_per_report_and_the_generate_timing(tmp_path):
    (tmp_path / "eval" / "package-ddim").mkdir(parents=True)
    (tmp_path / "eval" / "package-ddim" / "report.json").write_text(json.dumps(_report(0.5)))
    text = write_summary(tmp_path, [3.21, 2.5]).read_text()
    assert "| check | package, ddim 50 steps |" in text
    assert "**0.500 (1/2)**" in text
    assert "| package, ddim 50 steps | ddim | 50 | 4.5 | 256x256 | 2 | 0.25 |" in text
    assert "3.2, 2.5" in text
    again = write_summary(tmp_path, None).read_text()  # a run with --no-timing keeps the last timing
    assert again == text


def test_unknown_run_names_are_refused(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["--root", str(tmp_path), "--runs", "base,nope"])
    assert "nope" in capsys.readouterr().err
