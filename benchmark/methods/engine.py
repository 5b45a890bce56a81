"""Train one configuration on one split with one seed, and predict its validation cases.

The single code path of every configuration (PROTOCOL.md section 5): they differ in what they declare, never in code.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from benchmark.config import TrainingPath
from benchmark.data.imaging import ImageBank
from benchmark.data.pipeline import PreparedData
from benchmark.errors import LeakageError
from benchmark.methods.configurations import Configuration
from benchmark.methods.losses import Objective, inverse_frequency_weights
from benchmark.methods.stacking import Trainee, fit_all
from benchmark.methods.teachers import TeacherRequest, TeacherStore, TrainedTeacher, check_no_leakage
from benchmark.methods.trainable import configuration_trainable
from benchmark.methods.training import FitLog, TrainingSet, derive_generator, forward_all, positive_scores
from benchmark.schemas import CasePrediction, DeploymentProbe, ImageRecord, Modality, PairedRecord, Split, TestSet

# Steps of every run:
# 1. the split's training and validation records come from the configuration's manifest;
# 2. a teacher, if any, is trained first on its modality's manifest minus every validation patient (any modality)
#    and minus every test set's patients and pictures, frozen, and run once over the student's training samples
#    (the matched CT for cross-modal teachers, the X-ray itself for the same-modality teacher) - inputs are never
#    augmented, so its outputs are computed once, not per step;
# 3. the student (or late-fusion model) is trained with its objective;
# 4. validation cases are predicted through `predict`, which hands the model only the modalities the configuration
#    declares in `inference_inputs`: X-ray-only models never receive CT;
# 5. a deployable run (X-ray only, paired manifest) also predicts every test set's cases (PROTOCOL.md section 13),
#    once its lineage is checked to hold no test patient.
# The teacher is seeded with the split's seed, the student with the run's seed. On the stacked path
# (settings.engine.path) `run_many` trains the teachers, then the runs, that share a stack key together
# (benchmark.methods.stacking); each run still gets its own data, batches, objective and teacher.


@dataclass(frozen=True)
class TeacherUse:
    """Which teacher a run distilled from, and the patients that teacher was trained on."""

    teacher_id: str
    modality: str
    seed: int
    training_patients: tuple[str, ...]
    training_images: int
    train_seconds: float
    steps: int
    from_cache: bool
    path: TrainingPath = TrainingPath.PER_RUN
    # a privileged-modality teacher's predictions on the split's validation cases, each from the case's matched
    # privileged image: its head-room over the target-modality model on the same patients (evidence.headroom)
    validation_predictions: tuple[CasePrediction, ...] | None = None


@dataclass
class FittedRun:
    """A trained model with everything needed to predict and to account for it."""

    configuration: Configuration
    split: Split
    seed: int
    model: nn.Module
    fit_log: FitLog
    teacher: TeacherUse | None
    train_patients: tuple[str, ...]
    path: TrainingPath = TrainingPath.PER_RUN


@dataclass
class TestOutput:
    """A deployable run's per-case predictions on one test set, and the deployment probe on its first cases."""

    __test__ = False  # not a pytest test class

    predictions: list[CasePrediction]
    probe: DeploymentProbe


@dataclass
class RunOutput:
    """Per-case predictions of one (configuration, split, seed), the teacher used, and timings."""

    predictions: list[CasePrediction]
    fitted: FittedRun
    seconds: dict[str, float] = field(default_factory=dict)
    probe: DeploymentProbe | None = None
    tests: dict[str, TestOutput] = field(default_factory=dict)  # test set name -> its scores (deployable runs)


TEST_PROBE_CASES = 32  # the deployment probe on a test set re-predicts its first cases with CT given and altered


@dataclass
class _PlannedRun:
    """A run ready to train: its initialised network and objective, its training set and its teacher."""

    configuration: Configuration
    split: Split
    seed: int
    model: nn.Module
    objective: Objective
    data: TrainingSet
    teacher: TeacherUse | None
    train_patients: tuple[str, ...]


def predict(model: nn.Module, configuration: Configuration,
            inputs: dict[Modality, Tensor]) -> Tensor:
    """P(COVID-19) per case, reading only the modalities the configuration declares for inference."""
    missing = [m for m in configuration.inference_inputs if m not in inputs]
    if missing:
        raise ValueError(f"{configuration.name} needs {', '.join(missing)} at inference")
    first = inputs[configuration.inference_inputs[0]]
    second = inputs[configuration.inference_inputs[1]] if len(configuration.inference_inputs) > 1 else None
    return positive_scores(forward_all(model, first, second).logits)


class Engine:
    """Runs configurations on splits of one prepared cohort, sharing the image bank and teacher store.

    `path` is how networks train: `per-run` (each run alone, the reference) or `stacked` (runs that share a plain
    cnn network, a schedule and a training-set size train together, `benchmark.methods.stacking`)."""

    def __init__(self, prepared: PreparedData, bank: ImageBank, teachers: TeacherStore,
                 device: torch.device | str = "cpu", path: TrainingPath = TrainingPath.PER_RUN) -> None:
        self.prepared = prepared
        self.bank = bank
        self.teachers = teachers
        self.device = torch.device(device)
        self.path = path
        self._pairs: dict[str, PairedRecord] = {p.xray.image_id: p for p in prepared.manifests["paired"].pairs or []}
        self._test_patients = frozenset(c.patient_id for t in prepared.test_sets for c in t.cases)
        self._test_pixels = frozenset(c.pixels_sha256 for t in prepared.test_sets for c in t.cases)
        self._test_inputs: dict[str, Tensor] = {}
        self._teachers_on_validation: dict[tuple[str, str], tuple[CasePrediction, ...]] = {}  # (teacher, val set)

    def _images(self, records: list[ImageRecord], modality: Modality) -> Tensor:
        """The normalised images of `records` (of `modality`): (N, C, size, size), C by the reader policy."""
        return torch.from_numpy(self.bank.stack([r.cache_key for r in records],
                                                self.bank.cache.policy.channels_for(modality)))

    def _matched_ct(self, records: list[ImageRecord]) -> list[ImageRecord]:
        return [self._pairs[r.image_id].ct for r in records]

    def inputs_for(self, configuration: Configuration, records: list[ImageRecord]) -> dict[Modality, Tensor]:
        """The image tensors of `records` in every modality available for them (paired: X-ray and matched CT)."""
        inputs: dict[Modality, Tensor] = {configuration.input_modality: self._images(records,
                                                                                   configuration.input_modality)}
        if configuration.manifest == "paired":
            inputs["ct"] = self._images(self._matched_ct(records), "ct")
        return inputs

    def in_test_set(self, record: ImageRecord) -> bool:
        """Whether `record` is a test patient's image or shows a test image's pixels: no model may train on it."""
        return (record.patient_id in self._test_patients
                or self.prepared.cohort.pixels.get(record.image_id) in self._test_pixels)

    def teacher_request(self, configuration: Configuration, split: Split) -> TeacherRequest:
        """What the teacher of `configuration` for `split` is trained on: its modality's manifest minus validation
        patients and minus every test set's patients and pictures (PROTOCOL.md section 13: with the held-out set, an
        X-ray teacher trains on the paired training patients only)."""
        assert configuration.teacher is not None
        modality = configuration.teacher.modality
        manifest = self.prepared.manifests["all-ct" if modality == "ct" else "all-xray"]
        held_out = set(split.val_patients)
        records = [r for r in manifest.records if r.patient_id not in held_out and not self.in_test_set(r)]
        check_no_leakage(f"{modality} teacher", {r.patient_id for r in records}, self._test_patients, "test")
        return TeacherRequest(configuration.teacher, records, split.val_patients, split.seed)

    def teacher_for(self, configuration: Configuration, split: Split) -> TrainedTeacher:
        """The frozen teacher of `configuration` for `split`: its modality's manifest minus validation patients."""
        return self.teachers.get_many([self.teacher_request(configuration, split)], self.bank, self.device,
                                      self.path)[0]

    def _plan(self, configuration: Configuration, split: Split, seed: int,
              teacher: TrainedTeacher | None) -> _PlannedRun:
        """Initialise the run's network and objective and assemble its training set (with its trained teacher's
        outputs)."""
        if split.manifest != configuration.manifest:
            raise ValueError(f"{configuration.name} trains on {configuration.manifest}, split is of {split.manifest}")
        manifest = self.prepared.manifests[configuration.manifest]
        train = manifest.records_of(split.train_patients)
        check_no_leakage(configuration.name, {r.patient_id for r in train}, split.val_patients)
        if not train:
            raise LeakageError(f"{split.split_id}: no training images")
        labels = torch.tensor([r.label for r in train], dtype=torch.long)
        inputs = self.inputs_for(configuration, train)
        init = derive_generator(seed, "init")

        teacher_use = None
        teacher_outputs = None
        model, objective = configuration_trainable(configuration, inverse_frequency_weights(labels), init,
                                                   teacher.model if teacher is not None else None,
                                                   self.bank.cache.policy)
        if teacher is not None and configuration.teacher is not None:
            teacher_use = TeacherUse(teacher.teacher_id, teacher.modality, teacher.seed, teacher.training_patients,
                                     len(teacher.training_images), teacher.train_seconds, teacher.steps,
                                     teacher.from_cache, teacher.path, self._teacher_on_validation(teacher, split))
            teacher_outputs = forward_all(teacher.model, inputs[configuration.teacher.modality],
                                          keep=objective.teacher_features(), device=self.device)

        data = TrainingSet(inputs[configuration.input_modality], labels,
                           ct_inputs=inputs.get("ct") if configuration.kind == "late-fusion" else None,
                           teacher=teacher_outputs)
        return _PlannedRun(configuration, split, seed, model, objective, data, teacher_use,
                           tuple(sorted({r.patient_id for r in train})))

    def _teacher_on_validation(self, teacher: TrainedTeacher, split: Split) -> tuple[CasePrediction, ...] | None:
        """A privileged-modality teacher's predictions on the paired validation cases, each read from the case's
        matched privileged image (None for a target-modality teacher)."""
        if teacher.modality != "ct" or split.manifest != "paired":
            return None
        key = (teacher.teacher_id, split.val_hash)
        if key not in self._teachers_on_validation:  # one pass per teacher and split, however many runs use it
            val = self.prepared.manifests["paired"].records_of(split.val_patients)
            scores = positive_scores(forward_all(teacher.model, self._images(self._matched_ct(val), "ct"),
                                                 device=self.device).logits)
            self._teachers_on_validation[key] = tuple(
                CasePrediction(patient_id=r.patient_id, image_id=r.image_id, label=r.label, score=float(s),
                               **self._match_of(r, "paired"))
                for r, s in zip(val, scores.tolist(), strict=True))
        return self._teachers_on_validation[key]

    def fit(self, configuration: Configuration, split: Split, seed: int) -> FittedRun:
        """Train `configuration` on the training patients of `split` with `seed`."""
        return self.fit_many([(configuration, split, seed)])[0]

    def fit_many(self, runs: list[tuple[Configuration, Split, int]]) -> list[FittedRun]:
        """Train every run, their teachers first; on the stacked path, teachers and runs that share a stack key train
        together."""
        requests = [self.teacher_request(c, s) for c, s, _ in runs if c.teacher is not None]
        teachers = iter(self.teachers.get_many(requests, self.bank, self.device, self.path))
        planned = [self._plan(c, s, seed, next(teachers) if c.teacher is not None else None) for c, s, seed in runs]
        fitted = fit_all([Trainee(r.model, r.objective, r.data, r.configuration.training, r.seed) for r in planned],
                         self.device, self.path == TrainingPath.STACKED)
        return [FittedRun(r.configuration, r.split, r.seed, r.model, log, r.teacher, r.train_patients,
                          TrainingPath.STACKED if stacked else TrainingPath.PER_RUN)
                for r, (log, stacked) in zip(planned, fitted, strict=True)]

    def run(self, configuration: Configuration, split: Split, seed: int) -> RunOutput:
        """Fit, then predict every validation case of `split`."""
        return self.run_many([(configuration, split, seed)])[0]

    def run_many(self, runs: list[tuple[Configuration, Split, int]]) -> list[RunOutput]:
        """Fit every run (together where the path stacks them), then predict each one's validation cases."""
        start = time.perf_counter()
        fitted_runs = self.fit_many(runs)
        fit_share = (time.perf_counter() - start) / max(len(runs), 1)
        return [self._evaluate(fitted, fit_share) for fitted in fitted_runs]

    def _evaluate(self, fitted: FittedRun, fit_seconds: float) -> RunOutput:
        """Predict the validation cases of a fitted run, probe its use of CT, and time it."""
        configuration, split, seed = fitted.configuration, fitted.split, fitted.seed
        trained = time.perf_counter()
        val = self.prepared.manifests[configuration.manifest].records_of(split.val_patients)
        inputs = self.inputs_for(configuration, val)
        scores = predict(fitted.model, configuration, inputs)
        probe = probe_ct_use(fitted.model, configuration, inputs, scores, seed) if "ct" in inputs and \
            configuration.input_modality == "xray" else None
        predictions = [CasePrediction(patient_id=r.patient_id, image_id=r.image_id, label=r.label, score=float(s),
                                      **self._match_of(r, configuration.manifest))
                       for r, s in zip(val, scores.tolist(), strict=True)]
        done = time.perf_counter()
        tests = self.score_tests(fitted) if configuration.deployable else {}
        scored = time.perf_counter()
        seconds = {"fit": fit_seconds, "predict": done - trained, "total": fit_seconds + scored - trained}
        if tests:
            seconds["test_predict"] = scored - done
        if fitted.teacher is not None:
            seconds["teacher_train"] = 0.0 if fitted.teacher.from_cache else fitted.teacher.train_seconds
        return RunOutput(predictions, fitted, seconds, probe, tests)

    def _match_of(self, record: ImageRecord, manifest: str) -> dict[str, object]:
        """A paired case's matched CT image and offset gap, kept with its prediction (PROTOCOL.md section 2)."""
        if manifest != "paired":
            return {}
        pair = self._pairs[record.image_id]
        return {"matched_ct": pair.ct.image_id, "offset_gap": pair.offset_gap}

    def _test_images(self, test_set: TestSet) -> Tensor:
        """The normalised images of a test set, stacked once per engine (every run scores the same tensor)."""
        if test_set.name not in self._test_inputs:
            self._test_inputs[test_set.name] = torch.from_numpy(
                self.bank.stack([c.cache_key for c in test_set.cases]))
        return self._test_inputs[test_set.name]

    def score_tests(self, fitted: FittedRun) -> dict[str, TestOutput]:
        """Predict every test set's cases from X-ray alone at the protocol's threshold (nothing is chosen on them),
        after checking that neither the run nor its teacher trained on a test patient."""
        configuration = fitted.configuration
        if not configuration.deployable:
            raise ValueError(f"{configuration.name} reads CT at inference: it cannot be scored on an X-ray test set")
        trained_on = set(fitted.train_patients) | set(fitted.teacher.training_patients if fitted.teacher else ())
        check_no_leakage(f"{configuration.name} (or its teacher)", trained_on, self._test_patients, "test")
        outputs = {}
        for test_set in self.prepared.test_sets:
            images = self._test_images(test_set)
            scores = predict(fitted.model, configuration, {"xray": images})
            first = images[:TEST_PROBE_CASES]
            ct_shape = (first.shape[0], self.bank.cache.policy.channels_for("ct"), *first.shape[2:])
            blank_ct = {"xray": first, "ct": first.new_zeros(ct_shape)}  # test cases have no CT: a blank one
            probe = probe_ct_use(fitted.model, configuration, blank_ct, predict(fitted.model, configuration, blank_ct),
                                 fitted.seed)
            outputs[test_set.name] = TestOutput(
                [CasePrediction(patient_id=c.patient_id, image_id=c.image_id, label=c.label, score=float(s))
                 for c, s in zip(test_set.cases, scores.tolist(), strict=True)], probe)
        return outputs


def probe_ct_use(model: nn.Module, configuration: Configuration, inputs: dict[Modality, Tensor],
                 scores: Tensor, seed: int) -> DeploymentProbe:
    """Re-predict with CT removed and with CT replaced by seeded noise; record the largest score change."""
    noise = torch.randn(inputs["ct"].shape, generator=derive_generator(seed, "probe")) * 5
    with_noise = predict(model, configuration, {**inputs, "ct": noise})
    removed = None
    if not configuration.reads_ct_at_inference:
        removed = float((predict(model, configuration, {"xray": inputs["xray"]}) - scores).abs().max())
    return DeploymentProbe(reads_ct_declared=configuration.reads_ct_at_inference, ct_removed_max_abs_diff=removed,
                           ct_noise_max_abs_diff=float((with_noise - scores).abs().max()))
