"""Teachers: trained first, frozen, cached on disk, and never trained on a validation patient.

Caching by everything that fixes a teacher's weights lets runs share it, while the store refuses any leakage.
"""

from __future__ import annotations

import fcntl
import hashlib
import io
import json
from collections.abc import Collection, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from benchmark.atomic import write_atomically
from benchmark.config import TrainingPath
from benchmark.data.imaging import ImageBank
from benchmark.errors import LeakageError, OutputError, describe_os_error
from benchmark.methods.configurations import TeacherConfig
from benchmark.methods.losses import inverse_frequency_weights
from benchmark.methods.stacking import Trainee, fit_all, stackable_config
from benchmark.methods.trainable import input_network, teacher_trainable
from benchmark.methods.training import TrainingSet, derive_generator
from benchmark.schemas import ImageRecord

# A teacher is identified by everything that determines its weights: its network and training settings, modality,
# seed, the exact training images (id, content hash, label), the image size and normalisation, the device type and
# the code/torch versions, and its input channels when more than one (the privileged modality's middle three axial
# slices: its images' cache keys differ too). The store refuses (LeakageError) a teacher whose training patients
# intersect the validation patients of the split it serves, and it records the training patients beside the weights
# so the claim tests can check them later.

MODEL_CODE_VERSION = 1  # bump when a change to models/losses/training alters trained weights


@dataclass(frozen=True)
class TrainedTeacher:
    """A frozen teacher and what it was trained on."""

    teacher_id: str
    model: nn.Module
    modality: str
    seed: int
    training_patients: tuple[str, ...]
    training_images: tuple[str, ...]
    train_seconds: float
    steps: int
    from_cache: bool
    path: TrainingPath = TrainingPath.PER_RUN


@dataclass(frozen=True)
class TeacherRequest:
    """One teacher a run needs: its configuration, training records, the validation patients it must not see, and
    its seed."""

    config: TeacherConfig
    records: list[ImageRecord]
    val_patients: tuple[str, ...]
    seed: int


def teacher_key(config: TeacherConfig, records: list[ImageRecord], seed: int, bank: ImageBank,
                device: torch.device, path: TrainingPath = TrainingPath.PER_RUN) -> str:
    """sha256 of everything that determines the teacher's weights (the stacked path's teachers apart: other
    floating-point order; the per-run path's key is the one stores have always used)."""
    channels = bank.cache.policy.channels_for(config.modality)
    identity: dict[str, object] = {
        "code": MODEL_CODE_VERSION, "torch": torch.__version__, "device": device.type,
        "teacher": config.model_dump(mode="json"), "seed": seed,
        "images": sorted([r.image_id, r.cache_key, r.label] for r in records),
        "image_size": bank.cache.size, "normalise": [bank.mean, bank.std],
    }
    if path != TrainingPath.PER_RUN:
        identity["path"] = path
    if channels != 1:
        identity["in_channels"] = channels
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode("utf-8")).hexdigest()


def check_no_leakage(what: str, training_patients: set[str], val_patients: Collection[str],
                     held: str = "validation") -> None:
    """LeakageError naming the patients when a training set touches the validation set (or a test set: `held`)."""
    leaked = sorted(training_patients & set(val_patients))
    if leaked:
        shown = ", ".join(leaked[:10]) + (f" and {len(leaked) - 10} more" if len(leaked) > 10 else "")
        raise LeakageError(f"{what} would train on {held} patient(s) {shown}")


class TeacherStore:
    """Trains teachers on demand and reuses them from memory and from `root` (None: memory only)."""

    def __init__(self, root: Path | str | None = None) -> None:
        self.root = Path(root) if root is not None else None
        self._memory: dict[str, TrainedTeacher] = {}

    def get(self, config: TeacherConfig, records: list[ImageRecord], val_patients: tuple[str, ...], seed: int,
            bank: ImageBank, device: torch.device, path: TrainingPath = TrainingPath.PER_RUN) -> TrainedTeacher:
        """The frozen teacher trained on `records` with `seed`; refused if it would see a validation patient."""
        return self.get_many([TeacherRequest(config, records, val_patients, seed)], bank, device, path)[0]

    def get_many(self, requests: list[TeacherRequest], bank: ImageBank, device: torch.device,
                 path: TrainingPath = TrainingPath.PER_RUN) -> list[TrainedTeacher]:
        """The frozen teachers of `requests`, each from memory, the disk cache, or trained; on the stacked path the
        missing ones that share a network, schedule and training-set size train together (`fit_stacked`)."""
        keys = []
        for request in requests:
            config = request.config
            if any(r.modality != config.modality for r in request.records):
                raise ValueError(f"a {config.modality} teacher was given images of another modality")
            check_no_leakage(f"{config.modality} teacher", {r.patient_id for r in request.records},
                             request.val_patients)
            network = input_network(config.network, config.modality, bank.cache.policy, f"{config.modality} teacher")
            effective = path if stackable_config(network) else TrainingPath.PER_RUN
            keys.append(teacher_key(config, request.records, request.seed, bank, device, effective))
        wanted = {key: request for key, request in zip(keys, requests, strict=True) if key not in self._memory}
        with self._locked_all(sorted(wanted)):
            missing = {}
            for key, request in wanted.items():
                loaded = self._load(key, request.config, device, bank)
                if loaded is not None:
                    self._memory[key] = loaded
                else:
                    missing[key] = request
            for key, teacher in self._train(missing, bank, device, path).items():
                self._save(teacher)
                self._memory[key] = teacher
        return [self._memory[key] for key in keys]

    def _train(self, requests: dict[str, TeacherRequest], bank: ImageBank, device: torch.device,
               path: TrainingPath) -> dict[str, TrainedTeacher]:
        """Train every requested teacher: one by one (`fit`), or in stacked groups."""
        built = {}
        for key, request in requests.items():
            labels = torch.tensor([r.label for r in request.records], dtype=torch.long)
            model, objective = teacher_trainable(request.config, inverse_frequency_weights(labels),
                                                 derive_generator(request.seed, "init"), bank.cache.policy)
            inputs = torch.from_numpy(bank.stack([r.cache_key for r in request.records],
                                                 bank.cache.policy.channels_for(request.config.modality)))
            built[key] = (model, objective, TrainingSet(inputs, labels))
        fitted = dict(zip(built, fit_all([Trainee(*built[key], requests[key].config.training, requests[key].seed)
                                          for key in built], device, path == TrainingPath.STACKED), strict=True))
        return {key: self._freeze(TrainedTeacher(
            teacher_id=key, model=built[key][0], modality=request.config.modality, seed=request.seed,
            training_patients=tuple(sorted({r.patient_id for r in request.records})),
            training_images=tuple(sorted(r.image_id for r in request.records)), train_seconds=fitted[key][0].seconds,
            steps=fitted[key][0].steps, from_cache=False,
            path=TrainingPath.STACKED if fitted[key][1] else TrainingPath.PER_RUN))
            for key, request in requests.items()}

    @staticmethod
    def _freeze(teacher: TrainedTeacher) -> TrainedTeacher:
        teacher.model.eval()
        teacher.model.requires_grad_(False)
        return teacher

    def _paths(self, key: str) -> tuple[Path, Path]:
        assert self.root is not None
        folder = self.root / key[:2]
        return folder / f"{key}.pt", folder / f"{key}.json"

    def _save(self, teacher: TrainedTeacher) -> None:
        if self.root is None:
            return
        weights_path, meta_path = self._paths(teacher.teacher_id)
        buffer = io.BytesIO()
        torch.save({k: v.cpu() for k, v in teacher.model.state_dict().items()}, buffer)
        meta = {"teacher_id": teacher.teacher_id, "modality": teacher.modality, "seed": teacher.seed,
                "network": teacher.model.config.model_dump(mode="json"),
                "training_patients": list(teacher.training_patients),
                "training_images": list(teacher.training_images),
                "train_seconds": teacher.train_seconds, "steps": teacher.steps, "path": teacher.path}
        write_atomically(weights_path, buffer.getvalue())
        write_atomically(meta_path, json.dumps(meta, indent=1).encode("utf-8"))  # meta last: marks complete

    def _load(self, key: str, config: TeacherConfig, device: torch.device, bank: ImageBank) -> TrainedTeacher | None:
        if self.root is None:
            return None
        weights_path, meta_path = self._paths(key)
        if not meta_path.exists():
            return None
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
            state = torch.load(weights_path, map_location=device, weights_only=True)
        except (OSError, ValueError, RuntimeError):
            return None  # unreadable entry: train again and overwrite it
        model, _ = teacher_trainable(config, torch.ones(2), torch.Generator().manual_seed(0),  # weights loaded next
                                     bank.cache.policy)
        model.load_state_dict(state)
        model.to(device)
        return self._freeze(TrainedTeacher(
            teacher_id=key, model=model, modality=meta["modality"], seed=meta["seed"],
            training_patients=tuple(meta["training_patients"]), training_images=tuple(meta["training_images"]),
            train_seconds=meta["train_seconds"], steps=meta["steps"], from_cache=True,
            path=TrainingPath(meta.get("path", TrainingPath.PER_RUN))))

    @contextmanager
    def _locked_all(self, keys: list[str]) -> Iterator[None]:
        """Hold an exclusive lock per teacher (taken in sorted order) so parallel workers train each teacher once;
        OutputError naming the lock (with the machine's errno: a full disk stops storing) when it cannot be made."""
        if self.root is None:
            yield
            return
        with ExitStack() as stack:
            for key in sorted(keys):
                lock_path = self._paths(key)[0].with_suffix(".lock")
                try:
                    lock_path.parent.mkdir(parents=True, exist_ok=True)
                    handle = stack.enter_context(lock_path.open("a"))
                except OSError as exc:
                    raise OutputError(lock_path, f"cannot create the teacher lock: {describe_os_error(exc)}",
                                      errno=exc.errno) from exc
                fcntl.flock(handle, fcntl.LOCK_EX)
                stack.callback(fcntl.flock, handle, fcntl.LOCK_UN)
            yield

