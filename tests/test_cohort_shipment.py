"""The driver prepares a cohort once and ships it to its workers as a content-addressed file: the same cohort is the
same bytes in every process (one cache entry however many runs), and a worker loads exactly what the driver wrote."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
from pathlib import Path

from benchmark.config import Settings
from benchmark.experiment.worker import ship_cohort

PREPARE_AND_SHIP = """
import sys
from pathlib import Path
from benchmark.config import Settings
from benchmark.experiment.study import Study
from benchmark.experiment.worker import ship_cohort
settings = Settings.model_validate_json(sys.argv[2])
study = Study.of_cohort(Path(sys.argv[1]), settings, sys.argv[3])
print(ship_cohort(study.prepared, Path(sys.argv[3])).digest)
"""


def test_the_same_cohort_ships_as_the_same_bytes_whatever_the_string_hashing(small_prepared, tmp_path: Path) -> None:
    prepared, cache = small_prepared
    settings = Settings.model_validate({"data": {"image_size": 32},
                                        "splits": {"monte_carlo_resamples": 2, "monte_carlo_val_patients": 3}})
    digests = set()
    for seed in ("1", "2", "3"):  # each process prepares the cohort from its files and ships it
        done = subprocess.run([sys.executable, "-c", PREPARE_AND_SHIP, str(prepared.cohort.image_root),
                               settings.model_dump_json(), str(tmp_path / "cache")], check=True, capture_output=True,
                              text=True, env={**os.environ, "PYTHONHASHSEED": seed})
        digests.add(done.stdout.strip())
    assert len(digests) == 1
    assert [p.name for p in (tmp_path / "cache" / "prepared").iterdir()] == [f"{digests.pop()}.pickle"]


def test_a_worker_loads_what_the_driver_prepared(small_prepared, tmp_path: Path) -> None:
    prepared, _ = small_prepared
    shipped = ship_cohort(prepared, tmp_path)
    assert shipped.load() == prepared
    assert pickle.loads(pickle.dumps(shipped.with_payload())).load() == prepared  # what Ray carries
