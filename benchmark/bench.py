"""Speed targets, measured: `python -m benchmark.bench --data PATH` prints wall times and ratios to target.

Targets live here, never in timed unit tests. Each stage runs the real command line in a fresh
process, so interpreter start-up and imports count as a user would feel them.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from benchmark.data.pipeline import resolve_data_root

if TYPE_CHECKING:
    from benchmark.evidence.power import PowerResult
    from benchmark.experiment.store import RunRecord


@dataclass(frozen=True)
class Measurement:
    """One timed stage and the target it is held to."""

    stage: str
    seconds: float
    target_seconds: float

    @property
    def ratio(self) -> float:
        """Measured time over target: below 1 meets the target."""
        return self.seconds / self.target_seconds


def _time_cli(args: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "benchmark.cli", *args], check=True, env=env,
                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    return time.perf_counter() - start


def bench_cohorts(data: Path, workdir: Path) -> list[Measurement]:
    """`ctxray-bench cohorts` with an empty image cache (first run), then with the cache warm."""
    env = {**os.environ, "CTXRAY_CACHE": str(workdir / "cache")}
    args = ["cohorts", "--data", str(data)]
    cold = _time_cli(args, env)
    warm = min(_time_cli(args, env) for _ in range(3))
    return [Measurement("cohorts, first run (empty cache)", cold, 60.0),
            Measurement("cohorts, warm cache (best of 3)", warm, 5.0)]


def matmul_peak_gflops(n: int = 2048, dtype: str = "float32", repeats: int = 20) -> float:
    """Best achieved GFLOP/s of an n x n matmul: the machine's practical compute ceiling."""
    import torch

    a = torch.randn(n, n, dtype=getattr(torch, dtype))
    b = torch.randn(n, n, dtype=getattr(torch, dtype))
    a @ b  # warm-up
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best / 1e9


def training_step_rate(network: str, batch: int = 16, size: int = 128, steps: int = 20,
                       bf16: bool = False) -> tuple[float, float]:
    """(training steps/s, FLOPs per step) of the teacher or student network at `batch` x 1 x size x size."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from benchmark.methods.configurations import load_configurations
    from benchmark.methods.losses import LossConfig, Objective
    from benchmark.methods.models import build_network
    from benchmark.methods.training import derive_generator

    configs = load_configurations()
    config = configs["xray-teacher-ref"].network if network == "teacher" else configs["student-only"].network
    model = build_network(config, derive_generator(0, "init")).train()
    objective = Objective(LossConfig(), torch.ones(2), has_teacher=False)
    optimiser = torch.optim.AdamW(model.parameters(), lr=3e-4)
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(batch, 1, size, size, generator=generator)
    y = torch.randint(0, 2, (batch,), generator=generator)

    model = model.to(memory_format=torch.channels_last)
    x = x.contiguous(memory_format=torch.channels_last)

    def step() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            output = model(x)
        output.logits = output.logits.float()
        loss, _ = objective(output, y)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()

    with FlopCounterMode(display=False) as counter:
        step()
    for _ in range(3):
        step()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return steps / (time.perf_counter() - start), float(counter.get_total_flops())


def bench_training(data: Path, workdir: Path) -> list[Measurement]:
    """Teacher and student training steps/s at batch 16, and GFLOP/s against the fp32 matmul peak."""
    peak = matmul_peak_gflops()
    bf16 = matmul_peak_gflops(n=512, dtype="bfloat16", repeats=1)  # small: bf16 can be very slow on AVX2-only CPUs
    print(f"  matmul peak: fp32 (2048) {peak:.0f} GFLOP/s; bf16 (512) {bf16:.1f} GFLOP/s")
    rates = {}
    for network in ("teacher", "student"):
        rates[network] = rate, flops = training_step_rate(network)
        achieved = rate * flops / 1e9
        print(f"  {network}: {rate:.1f} steps/s at batch 16, {flops / 1e9:.2f} GFLOP/step, "
              f"{achieved:.1f} GFLOP/s = {achieved / peak:.1%} of the matmul peak")
    bf16_rate, _ = training_step_rate("teacher", steps=3, bf16=True)
    print(f"  teacher with bf16 autocast: {bf16_rate:.2f} steps/s vs {rates['teacher'][0]:.1f} in fp32 "
          f"({rates['teacher'][0] / bf16_rate:.1f}x); ctxray-bench trains in fp32")
    return []


def bench_smoke(data: Path, workdir: Path) -> list[Measurement]:
    """Every configuration of section 5 for one epoch on a tiny synthetic cohort at 128 x 128."""
    import torch

    from benchmark.config import Settings
    from benchmark.data.imaging import ImageBank
    from benchmark.data.pipeline import image_cache, prepare_data
    from benchmark.data.synthetic import write_synthetic_cohort
    from benchmark.methods.configurations import load_configurations
    from benchmark.methods.engine import Engine
    from benchmark.methods.teachers import TeacherStore

    root = write_synthetic_cohort(workdir / "synthetic")
    start = time.perf_counter()
    settings = Settings.model_validate({"splits": {"monte_carlo_resamples": 2, "monte_carlo_val_patients": 3}})
    cache = image_cache(settings, workdir / "synthetic-cache")
    prepared = prepare_data(root, settings, cache)
    engine = Engine(prepared, ImageBank(cache), TeacherStore(), torch.device("cpu"))
    regimes = {r.name: r for r in prepared.regimes}
    for config in load_configurations().values():
        one_epoch = config.with_overrides(config.name, {"training": {"epochs": 1}, **(
            {"teacher": {"training": {"epochs": 1}}} if config.teacher else {})})
        regime = {"all-xray": "reference-all-xray", "all-ct": "reference-all-ct"}.get(config.manifest, "paired-fixed")
        split = regimes[regime].splits[0]
        engine.run(one_epoch, split, split.seed)
    return [Measurement("smoke: 9 configurations x 1 epoch", time.perf_counter() - start, 60.0)]


def _engine(data: Path, cache_root: Path, teacher_root: Path | None = None):  # noqa: ANN202
    from benchmark.config import load_settings
    from benchmark.data.imaging import ImageBank
    from benchmark.data.pipeline import image_cache, prepare_data
    from benchmark.methods.engine import Engine
    from benchmark.methods.teachers import TeacherStore

    settings = load_settings()
    cache = image_cache(settings, cache_root)
    prepared = prepare_data(data, settings, cache)
    return Engine(prepared, ImageBank(cache, settings.data.normalise_mean, settings.data.normalise_std),
                  TeacherStore(teacher_root))


def bench_units(data: Path, workdir: Path) -> list[Measurement]:
    """Cache warm-up, cohort build (warm), one X-ray teacher training and one distilled student run."""
    from benchmark.config import load_settings
    from benchmark.data.pipeline import image_cache, prepare_data
    from benchmark.methods.configurations import load_configurations

    settings = load_settings()
    start = time.perf_counter()
    prepare_data(data, settings, image_cache(settings, workdir / "units-cache"))
    warm_up = time.perf_counter() - start
    start = time.perf_counter()
    engine = _engine(data, workdir / "units-cache")
    build = time.perf_counter() - start
    configurations = load_configurations()
    split = next(r for r in engine.prepared.regimes if r.name == "paired-fixed").splits[0]
    start = time.perf_counter()
    engine.teacher_for(configurations["same-modality-kd"], split)
    teacher = time.perf_counter() - start
    engine.teacher_for(configurations["plain-ct-kd"], split)
    start = time.perf_counter()
    engine.run(configurations["plain-ct-kd"], split, 42)
    student = time.perf_counter() - start
    return [Measurement("cache warm-up (decode all images)", warm_up, 60.0),
            Measurement("cohort build, warm cache", build, 5.0),
            Measurement("one X-ray teacher (5 epochs)", teacher, 60.0),
            Measurement("one student run (plain-ct-kd)", student, 5.0)]


def _trained_network(model, image_size: int, stacked: bool):  # noqa: ANN001, ANN202
    """A forward `images -> ModelOutput` of a network as it trains: alone, or held in a stacked module (the `stacked`
    path multiplies only the kernel taps that read real pixels, so it does less arithmetic than the dense network)."""
    from benchmark.methods.stacking import StackedClassifier, stackable

    if not (stacked and stackable(model)):
        return model
    holder = StackedClassifier([model], image_size)
    return lambda images: StackedClassifier.outputs(*holder(images))[0]  # images [B, 1, H, W] = B samples, K = 1


def _flops_per_sample(configuration, image_size: int, stacked: bool = False,  # noqa: ANN001
                      teacher_stacked: bool = False) -> dict[str, float]:
    """Training (forward + backward) and forward FLOPs per sample of a configuration and of its teacher, on the
    training path each was recorded with."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from benchmark.methods.losses import Objective
    from benchmark.methods.models import build_network
    from benchmark.methods.registry import NETWORKS
    from benchmark.methods.training import derive_generator

    x = torch.randn(2, 1, image_size, image_size)
    labels = torch.tensor([0, 1])
    generator = derive_generator(0, "init")
    result: dict[str, float] = {}
    teacher_output = None
    teacher_channels = None
    if configuration.teacher is not None:
        teacher = build_network(configuration.teacher.network, generator)
        trained_teacher = _trained_network(teacher, image_size, teacher_stacked)
        with FlopCounterMode(display=False) as counter:
            loss = torch.nn.functional.cross_entropy(trained_teacher(x).logits, labels)
            loss.backward()
        result["teacher_train"] = counter.get_total_flops() / 2
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            teacher_output = teacher(x)
        result["teacher_forward"] = counter.get_total_flops() / 2
        teacher_channels = teacher.stage_channels
    if configuration.kind == "late-fusion":
        model = NETWORKS.get("late-fusion")(configuration.network, generator)
        forward = lambda: model(x, x)  # noqa: E731
    else:
        model = build_network(configuration.network, generator)
        trained = _trained_network(model, image_size, stacked)
        forward = lambda: trained(x)  # noqa: E731
    objective = Objective(configuration.loss, torch.ones(2), has_teacher=teacher_output is not None,
                          student_channels=model.stage_channels,
                          teacher_channels=teacher_channels)
    with FlopCounterMode(display=False) as counter:
        loss, _ = objective(forward(), labels, teacher_output)
        loss.backward()
    result["train"] = counter.get_total_flops() / 2
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(x, x) if configuration.kind == "late-fusion" else model(x)
    result["forward"] = counter.get_total_flops() / 2
    return result


def matrix_flops(records: Iterable[RunRecord], image_size: int) -> tuple[float, float]:
    """(student-side FLOPs, teacher-training FLOPs) of stored runs, each counted on the training path it records."""
    per_config: dict[tuple[str, str, str | None], dict[str, float]] = {}
    student = 0.0
    teachers: dict[str, float] = {}
    for record in records:
        configuration = record.spec.configuration
        teacher_path = record.teacher.path if record.teacher is not None else None
        key = (configuration.model_dump_json(exclude={"name", "role", "tier"}), record.training_path, teacher_path)
        if key not in per_config:
            per_config[key] = _flops_per_sample(configuration, image_size, record.training_path == "stacked",
                                                teacher_path == "stacked")
        flops = per_config[key]
        student += record.fit.train_images * record.fit.epochs * flops["train"]
        student += (record.metrics.cases + sum(t.metrics.cases for t in record.tests.values())) * flops["forward"]
        if record.teacher is not None:
            student += record.fit.train_images * flops["teacher_forward"]
            teachers[record.teacher.teacher_id] = (record.teacher.training_images *
                                                   configuration.teacher.training.epochs * flops["teacher_train"])
    return student, sum(teachers.values())


def bench_paper(data: Path, workdir: Path) -> list[Measurement]:
    """The whole paper profile as a user runs it (per available device), its store read-back, and its FLOP floor."""
    import torch

    from benchmark.config import load_settings
    from benchmark.evidence.summary import summary_frame
    from benchmark.experiment.store import ResultsStore

    env = {**os.environ, "CTXRAY_CACHE": str(workdir / "cache")}
    _time_cli(["cohorts", "--data", str(data)], env)  # warm the image cache first: cohorts is timed separately
    devices = ["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"]
    measurements = []
    for device in devices:
        out = workdir / f"paper-{device}"
        wall = _time_cli(["run", "--data", str(data), "--profile", "paper", "--out", str(out), "--device", device,
                          "--quiet"], env)
        name = torch.cuda.get_device_name(0) if device == "cuda" else f"{os.cpu_count()} CPU cores"
        measurements.append(Measurement(f"paper profile on {device} ({name})", wall, 600.0))  # issue 12: < 10 min
    # issue 21: the same profile without the held-out test set, side by side, so its cost is measured on this CPU
    no_held_out = workdir / "no-held-out.toml"
    no_held_out.write_text("[test_sets]\nheld_out = false\n", encoding="utf-8")
    without = _time_cli(["run", "--data", str(data), "--profile", "paper", "--out", str(workdir / "paper-no-test"),
                         "--config", str(no_held_out), "--quiet"], env)
    measurements.append(Measurement("paper profile on cpu, no held-out set", without, 600.0))
    out = workdir / "paper-cpu"
    start = time.perf_counter()
    records = ResultsStore(out).load_all()
    scored = [r for r in records if r.tests]
    scoring = sum(r.timings.get("test_predict", 0.0) for r in scored)
    cases = sum(t.metrics.cases for r in scored for t in r.tests.values())
    print(f"  held-out test set: {len(scored)} of {len(records)} runs scored, {cases:,} test predictions in "
          f"{scoring:.0f} worker-s ({scoring / max(len(scored), 1):.2f} s a run); whole profile "
          f"{measurements[0].seconds:.0f} s with it, {without:.0f} s without "
          f"(x{measurements[0].seconds / without:.2f}; "
          "without it the X-ray teachers train on every X-ray patient outside the validation set)")
    summary_frame(records)
    read_back = time.perf_counter() - start
    student, teacher = matrix_flops(records, load_settings().data.image_size)
    peak = matmul_peak_gflops()
    floor = (student + teacher) / (peak * 1e9)
    cpu_wall = measurements[0].seconds
    print(f"  paper profile: {len(records)} runs; training FLOPs {(student + teacher) / 1e12:.1f} TFLOP "
          f"({teacher / 1e12:.1f} teacher training, {student / 1e12:.1f} students, teacher passes, evaluation)")
    print(f"  floor = FLOPs / fp32 matmul peak ({peak:.0f} GFLOP/s) = {floor:.0f} s; measured on CPU {cpu_wall:.0f} s"
          f" = {cpu_wall / floor:.2f} x floor (goal: <= 3 x)")
    return [*measurements, Measurement("read the paper store + summary", read_back, 5.0)]


def cpu_name() -> str:
    """The CPU's model name (from /proc/cpuinfo where there is one), for naming what a timing was measured on."""
    import platform

    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _toml_value(value: object) -> str:
    """A TOML inline value (tables, arrays, strings, numbers, booleans): enough to write a power grid back."""
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {_toml_value(v)}" for k, v in value.items()) + " }"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return repr(value)


def write_grid(path: Path, name: str, grid: dict[str, object]) -> Path:
    """Write one power grid as a grids file (`ctxray-bench power --grids`)."""
    lines = [f"[grids.{name}]"] + [f"{key} = {_toml_value(value)}" for key, value in grid.items()]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def bench_power(data: Path, workdir: Path, old_replicates: int = 2) -> list[Measurement]:
    """The default power grid as a user runs it (`ctxray-bench power`, stacked path, 30 replicates per cell) against
    its 20-minute target, and beside it the old per-run path on `old_replicates` replicates: runs per second of
    both and their ratio, the issue-15 target being 6x."""
    import tomllib

    from benchmark.evidence.power import DEFAULT_GRIDS, read_power

    declared = tomllib.loads(DEFAULT_GRIDS.read_text(encoding="utf-8"))["grids"]["default"]
    settings = dict(declared.get("settings", {}))
    old = {**declared, "replicates": old_replicates, "settings": {**settings, "engine": {"path": "per-run"}},
           "description": f"the default grid on the per-run path, {old_replicates} replicates"}
    grids = write_grid(workdir / "power-old-path.toml", "default", old)
    timings = {}
    for label, args in (("old per-run path", ["--grids", str(grids)]), ("stacked path", [])):
        out = workdir / f"power-{label.split()[0]}"
        wall = _time_cli(["power", "--grid", "default", "--out", str(out), "--quiet", *args], dict(os.environ))
        result = read_power(out / "power.json")
        runs = sum(len(list((store / "runs").glob("*.json"))) for store in (out / "stores").iterdir())
        timings[label] = (wall, runs, result)
        print(f"  {label}: {result.grid.replicates} replicates per cell, {runs} runs in {wall:.1f} s = "
              f"{runs / wall:.2f} runs/s")
    old_wall, old_runs, _ = timings["old per-run path"]
    new_wall, new_runs, result = timings["stacked path"]
    ratio = (new_runs / new_wall) / (old_runs / old_wall)
    print(f"  on {cpu_name()} ({os.cpu_count()} CPUs): the stacked path runs {ratio:.2f}x the old path's runs per "
          f"second (target 6x)")
    print(f"  power grid default: {len(result.replicates)} replicate evaluations; {result.statement}")
    _print_power_floor(workdir / "power-stacked", result, new_wall, new_runs * old_wall / old_runs / 6)
    return [Measurement(f"power study, default grid ({result.grid.replicates} replicates)", new_wall, 1200.0),
            Measurement("power: s per 1000 runs vs old path / 6", 1000 * new_wall / new_runs,
                        1000 * old_wall / old_runs / 6)]


def _print_power_floor(out: Path, result: PowerResult, wall: float, six_times: float) -> None:
    """Print the grid's arithmetic (counted on the path each run trained on) and how long it takes at the fp32 matmul
    peak, beside the measured time and the time 6x the old path's runs per second would allow: how far kernel
    efficiency alone could take the grid on this CPU."""
    from benchmark.evidence.power import study_settings
    from benchmark.experiment.store import ResultsStore

    records = [record for store in sorted((out / "stores").iterdir()) for record in ResultsStore(store).load_all()]
    student, teacher = matrix_flops(records, study_settings(result.grid).data.image_size)
    peak = matmul_peak_gflops()
    floor = (student + teacher) / (peak * 1e9)
    replicates = result.grid.replicates
    print(f"  arithmetic: {(student + teacher) / 1e12:.1f} TFLOP ({teacher / 1e12:.1f} teacher training, "
          f"{student / 1e12:.1f} students, teacher passes, evaluation) = {(student + teacher) / replicates / 1e12:.2f} "
          f"TFLOP per replicate")
    print(f"  floor at the fp32 matmul peak ({peak:.0f} GFLOP/s): {floor:.0f} s ({floor / replicates:.1f} s per "
          f"replicate); measured {wall:.0f} s = {wall / floor:.2f} x floor; 6x the old path allows {six_times:.0f} s "
          f"= {six_times / floor:.2f} x floor")


STAGES: dict[str, Callable[[Path, Path], list[Measurement]]] = {
    "cohorts": bench_cohorts, "training": bench_training, "smoke": bench_smoke, "units": bench_units,
    "paper": bench_paper, "power": bench_power}


def main(argv: list[str] | None = None) -> int:
    """Run the selected stages and print one line per measurement; exit 1 if a target is missed."""
    parser = argparse.ArgumentParser(prog="python -m benchmark.bench", description=__doc__)
    parser.add_argument("--data", help="data root (default: $CTXRAY_DATA)")
    parser.add_argument("--only", choices=sorted(STAGES), action="append", help="run only these stages")
    args = parser.parse_args(argv)
    data = resolve_data_root(args.data)
    print(f"ctxray-bench speed benchmark on {cpu_name()}, {os.cpu_count()} CPU(s), data {data}")
    print(f"{'stage':<40} {'wall s':>8} {'target s':>9} {'ratio':>6}")
    missed = False
    with tempfile.TemporaryDirectory(prefix="ctxray-bench-") as tmp:
        for name in args.only or list(STAGES):
            for m in STAGES[name](data, Path(tmp)):
                missed |= m.ratio > 1
                print(f"{m.stage:<40} {m.seconds:>8.2f} {m.target_seconds:>9.1f} {m.ratio:>6.2f}"
                      f"{'  MISSED' if m.ratio > 1 else ''}")
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
