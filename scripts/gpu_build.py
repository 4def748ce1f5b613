"""Run the demo build's data, cache and DiT stages on a GPU machine that is lent for a fixed time.

    python scripts/gpu_build.py --budget 540 --out /tmp/out --set base.batch_size=256

Each stage is the build's own function (`pixart.demo.build`), in the recipe's order; what differs from
`python -m pixart.demo.build` is only the scheduling, for a machine held for minutes:

- the datasets are rendered at once, the 256 px cache is encoded while the base stage trains, and every cache
  is encoded on the GPU;
- each DiT stage runs in a subprocess until its config's max_steps or its deadline (`--stop-before`: seconds
  before the end of the budget), whichever comes first; a stage stopped at its deadline keeps its newest
  checkpoint (the loop checkpoints every `checkpoint_every` steps), whose EMA weights become its final.safetensors;
- each stage's weights go to OUT as fp16 safetensors as soon as the stage ends, split into parts of at most
  15 MiB (join them with `cat NAME.part* > NAME`), and the logs, configs and validation grids go to
  OUT/logs.tar.gz at the end (also after a failure), so a machine taken back early still returns what finished.

To go on from an earlier machine's weights (the optimizer starts afresh, with its warmup), join their parts and
start a stage from them: `--set base.model.init_from=PATH` (every later stage starts from the stage before by
default: base -> lesson -> full -> hires -> kv). Wall times go to ROOT/device-times.jsonl and OUT/driver.log. The
text encoder and VAE are not trained here: they come from ROOT/export, as committed.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import subprocess
import sys
import tarfile
import threading
import time
from multiprocessing import Process
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from pixart.demo.build import DIT_STAGES  # noqa: E402

# base, lesson, full, hires, kv: the retext stages read the second T5, which this script does not train.
STAGES = tuple(stage for stage in DIT_STAGES if not stage.startswith("retext-"))

log = logging.getLogger("gpu_build")
PART = 15 * 1024 * 1024


class Build:
    def __init__(self, args: argparse.Namespace) -> None:
        from pixart.demo.build import split_overrides

        self.t0 = time.time()
        self.root, self.out, self.budget, self.smoke = Path(args.root), Path(args.out), args.budget, args.smoke
        self.stop_before = dict(zip(STAGES, args.stop_before, strict=True))
        self.extra = split_overrides(args.overrides)

    def elapsed(self) -> float:
        return time.time() - self.t0

    def record(self, stage: str, start: float, **extra) -> None:
        entry = {"stage": stage, "seconds": round(time.time() - start, 1), **extra}
        with (self.root / "device-times.jsonl").open("a") as f:
            f.write(json.dumps(entry) + "\n")
        seconds, budget = entry["seconds"], self.budget
        log.info("stage %s: %.1f s (at %.0f s of %.0f) %s", stage, seconds, self.elapsed(), budget, extra)

    def cache(self, res: int, name: str | None = None) -> None:
        import torch

        from pixart.demo.build import stage_cache

        device = "cuda" if torch.cuda.is_available() else "cpu"
        stage_cache(self.root, self.smoke, res, device=device, batch_size=128, workers=8, name=name)

    def train(self, stage: str) -> None:
        """`stage_train` in a subprocess until it ends or its deadline; the newest checkpoint becomes final."""
        from pixart.demo.carry import export_latest

        start = time.time()
        code = (
            "import logging; from pathlib import Path; "
            "logging.basicConfig(level=logging.INFO, format='%(asctime)s %(levelname)s %(name)s: %(message)s'); "
            "from pixart.demo.build import stage_train; "
            f"stage_train(Path({str(self.root)!r}), {stage!r}, {self.smoke}, {self.extra[stage]!r})"
        )
        stopped = False
        with (self.root / f"device-train-{stage}.log").open("w") as f:
            proc = subprocess.Popen([sys.executable, "-c", code], stdout=f, stderr=subprocess.STDOUT, cwd=REPO)
            try:
                proc.wait(timeout=max(10.0, self.budget - self.stop_before[stage] - self.elapsed()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                stopped = True
        final = self.root / f"dit-{stage}" / "final.safetensors"
        step = export_latest(final.parent, final)
        self.record(stage, start, step=step, stopped_at_deadline=stopped, returncode=proc.returncode)
        self.ship(stage, final)

    def ship(self, stage: str, final: Path) -> None:
        import torch
        from safetensors import safe_open
        from safetensors.torch import save

        with safe_open(str(final), "pt") as f:
            meta = f.metadata()
            tensors = {k: f.get_tensor(k).to(torch.float16) for k in f.keys()}
        blob = save(tensors, metadata=meta)
        for i in range(0, len(blob), PART):
            (self.out / f"{stage}.fp16.safetensors.part{i // PART}").write_bytes(blob[i : i + PART])
        log.info("%s: %d bytes of fp16 weights in %s", stage, len(blob), self.out)

    def pack_logs(self) -> None:
        with tarfile.open(self.out / "logs.tar.gz", "w:gz") as tar:
            for stage in STAGES:
                run = self.root / f"dit-{stage}"
                for name in ("log.csv", "config.json", "validation"):
                    if (run / name).exists():
                        tar.add(run / name, arcname=f"dit-{stage}/{name}")
            names = ["device-times.jsonl", *(f"device-train-{s}.log" for s in STAGES)]
            names += [f"cache-{r}/index.json" for r in ("128", "256", "lesson")]
            names += [f"data-{r}/dataset.json" for r in ("128", "256", "lesson")]
            for name in names:
                if (self.root / name).exists():
                    tar.add(self.root / name, arcname=name)

    def run(self) -> None:
        import torch

        from pixart.data.emoji import export_dataset
        from pixart.demo.build import SCENES, SIZES_128, SIZES_256, SMOKE_SCENES, stage_data_lesson

        gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else "none"
        log.info("torch %s, GPU %s, budget %.0f s", torch.__version__, gpu, self.budget)
        if Path("/dev/shm").is_dir():  # DataLoader workers (data.num_workers) hand batches over through it
            shm = shutil.disk_usage("/dev/shm")
            log.info("/dev/shm: %.1f GiB free of %.1f", shm.free / 2**30, shm.total / 2**30)
        counts = SMOKE_SCENES if self.smoke else SCENES
        start = time.time()
        other = Process(target=export_dataset, args=(self.root / "data-256", counts["data-256"], 1, SIZES_256))
        other.start()  # before any CUDA use in this process (fork)
        export_dataset(self.root / "data-128", counts["data-128"], seed=0, sizes=SIZES_128)
        self.record("data-128", start)
        start = time.time()
        stage_data_lesson(self.root, self.smoke)
        self.record("data-lesson", start)
        start = time.time()
        self.cache(128)
        self.record("cache-128", start)

        def cache_256() -> None:
            other.join()
            begin = time.time()
            subprocess.run([sys.executable, __file__, "--cache-256-only", *sys.argv[1:]], check=True)
            self.record("cache-256", begin)

        background = threading.Thread(target=cache_256)
        background.start()
        start = time.time()
        self.cache(128, name="lesson")
        self.record("cache-lesson", start)
        self.train("base")
        self.train("lesson")
        self.train("full")
        background.join()
        self.train("hires")
        self.train("kv")
        log.info("done at %.0f s", self.elapsed())


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", default=str(REPO / "runs" / "demo"), help="the build's working folder")
    p.add_argument("--out", required=True, help="where the weights, logs.tar.gz and driver.log go")
    p.add_argument("--budget", type=float, default=540.0, help="seconds this script may run")
    p.add_argument(
        "--stop-before", type=float, nargs=5, default=(300.0, 250.0, 205.0, 95.0, 40.0),
        metavar=("BASE", "LESSON", "FULL", "HIRES", "KV"),
        help="seconds before the end of the budget at which each DiT stage is stopped",
    )  # fmt: skip
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="STAGE.KEY=VALUE",
                   help="override a DiT stage's config, as `python -m pixart.demo.build --set`")  # fmt: skip
    p.add_argument("--smoke", action="store_true", help="the build's toy sizes (checks this script in a minute)")
    p.add_argument("--cache-256-only", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        handlers=[logging.StreamHandler(sys.stdout), logging.FileHandler(out / "driver.log")],
    )
    build = Build(args)
    if args.cache_256_only:
        build.cache(256)
        return 0
    try:
        build.run()
    finally:
        build.pack_logs()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
