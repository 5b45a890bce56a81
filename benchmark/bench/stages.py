"""Bench stages of the cohort, training and paper profile: wall times and arithmetic against their targets."""

from __future__ import annotations

import os
import time
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from benchmark.bench.common import Measurement, _time_cli, matmul_peak_gflops
from benchmark.config import TrainingPath
from benchmark.schemas import RegimeName

if TYPE_CHECKING:
    from benchmark.experiment.store import RunRecord


def bench_cohorts(data: Path, workdir: Path) -> list[Measurement]:
    """`ctxray-bench cohorts` with an empty image cache (first run), then with the cache warm."""
    env = {**os.environ, "CTXRAY_CACHE": str(workdir / "cache")}
    args = ["cohorts", "--data", str(data)]
    cold = _time_cli(args, env)
    warm = min(_time_cli(args, env) for _ in range(3))
    return [Measurement("cohorts, first run (empty cache)", cold, 60.0),
            Measurement("cohorts, warm cache (best of 3)", warm, 5.0)]


def training_step_rate(network: str, batch: int = 16, size: int = 128, steps: int = 20,
                       bf16: bool = False) -> tuple[float, float]:
    """(training steps/s, FLOPs per step) of the teacher or student network at `batch` x 1 x size x size."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from benchmark.methods.configurations import load_configurations
    from benchmark.methods.trainable import configuration_trainable
    from benchmark.methods.training import derive_generator

    configs = load_configurations()
    configuration = configs["xray-teacher-ref"] if network == "teacher" else configs["student-only"]
    model, objective = configuration_trainable(configuration, torch.ones(2), derive_generator(0, "init"), None)
    model.train()
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
    from benchmark.config import Settings
    from benchmark.data.synthetic import write_synthetic_cohort
    from benchmark.experiment.study import Study
    from benchmark.methods.configurations import load_configurations

    root = write_synthetic_cohort(workdir / "synthetic")
    start = time.perf_counter()
    settings = Settings.model_validate({"splits": {"monte_carlo_resamples": 2, "monte_carlo_val_patients": 3}})
    study = Study.of_cohort(root, settings, workdir / "synthetic-cache")
    engine, prepared = study.engine(), study.prepared
    regimes = {r.name: r for r in prepared.regimes}
    configurations = load_configurations()
    for config in configurations.values():
        one_epoch = config.with_overrides(config.name, {"training": {"epochs": 1}, **(
            {"teacher": {"training": {"epochs": 1}}} if config.teacher else {})})
        regime = {"all-xray": RegimeName.REFERENCE_ALL_XRAY, "all-ct": RegimeName.REFERENCE_ALL_CT}.get(
            config.manifest, RegimeName.PAIRED_FIXED)
        split = regimes[regime].splits[0]
        engine.run(one_epoch, split, split.seed)
    return [Measurement(f"smoke: {len(configurations)} configurations x 1 epoch", time.perf_counter() - start, 60.0)]


def _engine(data: Path, cache_root: Path, teacher_root: Path | None = None):  # noqa: ANN202
    from benchmark.config import load_settings
    from benchmark.experiment.study import Study

    return Study.of_cohort(data, load_settings(), cache_root).engine(teacher_root)


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
    split = next(r for r in engine.prepared.regimes if r.name == RegimeName.PAIRED_FIXED).splits[0]
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

    from benchmark.methods.trainable import configuration_trainable, teacher_trainable
    from benchmark.methods.training import derive_generator

    x = torch.randn(2, 1, image_size, image_size)
    labels = torch.tensor([0, 1])
    generator = derive_generator(0, "init")
    result: dict[str, float] = {}
    teacher_output = None
    teacher = None
    if configuration.teacher is not None:
        teacher, _ = teacher_trainable(configuration.teacher, torch.ones(2), generator)
        trained_teacher = _trained_network(teacher, image_size, teacher_stacked)
        with FlopCounterMode(display=False) as counter:
            loss = torch.nn.functional.cross_entropy(trained_teacher(x).logits, labels)
            loss.backward()
        result["teacher_train"] = counter.get_total_flops() / 2
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            teacher_output = teacher(x)
        result["teacher_forward"] = counter.get_total_flops() / 2
    model, objective = configuration_trainable(configuration, torch.ones(2), generator, teacher)
    if configuration.kind == "late-fusion":
        forward = lambda: model(x, x)  # noqa: E731
    else:
        trained = _trained_network(model, image_size, stacked)
        forward = lambda: trained(x)  # noqa: E731
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
            per_config[key] = _flops_per_sample(configuration, image_size, record.training_path == TrainingPath.STACKED,
                                                teacher_path == TrainingPath.STACKED)
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
