"""The planners turn a batch's runs into jobs: every run exactly once, a distilling run only after the one job that
trains its teacher, the costliest work first; the stacked planner groups runs by network and schedule."""

from __future__ import annotations

import pytest

from benchmark.experiment.matrix import RunSpec, expand_profile, load_profile
from benchmark.experiment.scheduling import STACKED_JOB_RUNS, JobKind, cost, plan_per_run, plan_stacked, teacher_key
from benchmark.methods.configurations import load_configurations


@pytest.fixture(scope="module")
def smoke_specs(small_prepared) -> list[RunSpec]:
    """The smoke profile's runs on the small synthetic cohort."""
    prepared, _ = small_prepared
    return expand_profile(load_profile("smoke"), load_configurations(), prepared.regimes)


def test_every_run_is_one_run_job_of_the_per_run_plan(smoke_specs: list[RunSpec]) -> None:
    jobs = plan_per_run(smoke_specs)
    planned = [spec.run_id for job in jobs if job.kind == JobKind.RUN for spec in job.specs]
    assert sorted(planned) == sorted(s.run_id for s in smoke_specs)
    assert all(len(job.specs) == 1 for job in jobs)


def test_each_teacher_is_one_job_and_its_runs_wait_for_it(smoke_specs: list[RunSpec]) -> None:
    jobs = plan_per_run(smoke_specs)
    teachers = [job.key for job in jobs if job.kind == JobKind.TEACHER]
    distilling = {teacher_key(s) for s in smoke_specs if s.configuration.teacher is not None}
    assert sorted(teachers) == sorted(distilling) and len(set(teachers)) == len(teachers)
    for job in jobs:
        if job.kind == JobKind.RUN and job.specs[0].configuration.teacher is not None:
            assert job.after == teacher_key(job.specs[0])
        else:
            assert job.after is None


def test_x_ray_teachers_come_first_and_free_runs_costliest_first(smoke_specs: list[RunSpec]) -> None:
    jobs = plan_per_run(smoke_specs)
    modalities = [job.specs[0].configuration.teacher.modality for job in jobs  # type: ignore[union-attr]
                  if job.kind == JobKind.TEACHER]
    assert modalities == sorted(modalities, key=lambda m: m != "xray")
    free = [cost(job.specs[0]) for job in jobs if job.kind == JobKind.RUN and job.after is None]
    assert free == sorted(free, reverse=True)


def test_the_stacked_plan_groups_runs_by_network_and_schedule_in_bounded_chunks(smoke_specs: list[RunSpec]) -> None:
    jobs = plan_stacked(smoke_specs)
    assert all(job.kind == JobKind.RUN and job.after is None for job in jobs)
    assert sorted(s.run_id for job in jobs for s in job.specs) == sorted(s.run_id for s in smoke_specs)
    for job in jobs:
        assert 1 <= len(job.specs) <= STACKED_JOB_RUNS
        assert len({s.configuration.network.model_dump_json() + s.configuration.training.model_dump_json()
                    for s in job.specs}) == 1
