"""Say what was merged or lost (issue 23 item 7): two candidates of one file that train the same thing are refused,
as a candidate that trains what a control trains is (tests/test_candidates.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmark.errors import ConfigError
from benchmark.methods.configurations import with_added_configurations

TWIN_CANDIDATES = '''
[[configurations]]
name = "mine-a"
role = "candidate"
manifest = "paired"
network = "student"
teacher = { modality = "ct", network = "teacher" }
loss = { terms = [{ objective = "rkd", weight = 0.1 }] }
candidate = true

[[configurations]]
name = "mine-b"
role = "candidate"
tier = 2
manifest = "paired"
network = "student"
teacher = { modality = "ct", network = "teacher" }
loss = { terms = [{ objective = "rkd", weight = 0.1 }] }
candidate = true
'''


def test_two_candidates_that_train_the_same_thing_are_refused_in_one_line_naming_both(tmp_path: Path) -> None:
    path = tmp_path / "configurations.toml"
    path.write_text(TWIN_CANDIDATES)
    with pytest.raises(ConfigError, match=r"candidate 'mine-a' trains exactly what 'mine-b' trains") as caught:
        with_added_configurations(path)
    assert str(path) in str(caught.value) and "\n" not in str(caught.value)
