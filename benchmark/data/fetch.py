"""`ctxray-bench data fetch`: the public collection at a pinned commit, verified, resumable, idempotent.

Pinning and verifying the download makes every study start from the same bytes of the upstream collection.
"""

from __future__ import annotations

import csv
import hashlib
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from benchmark.errors import FetchError

# The clone is made with git as `git init` + `git fetch --depth 1 origin COMMIT` + `git checkout`, so an interrupted
# fetch resumes by running the same command again (git keeps what it has), and a folder already at the commit and
# verified is left alone. Verification: metadata.csv's sha256 (the pinned release's, or `--sha256` for another ref)
# and every image that metadata.csv places in `images/` present and non-empty; the counts come from metadata.csv.

UPSTREAM_URL = "https://github.com/ieee8023/covid-chestxray-dataset"
PINNED_COMMIT = "6a4242344473ccb5ed0d2148d8c7bfb1691e4ed8"
KNOWN_METADATA_SHA256 = {PINNED_COMMIT: "44c17f903525980c3720c3b978d8c01663e5437c43a4df229a4040e87efc27ef"}
MARKER = ".ctxray-fetched"


def default_data_dir() -> Path:
    """$CTXRAY_HOME/data/covid-chestxray-dataset, else ~/.local/share/ctxray-bench/... (the fetched default)."""
    home = Path(os.environ["CTXRAY_HOME"]) if os.environ.get("CTXRAY_HOME") else (
        Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share") / "ctxray-bench")
    return home / "data" / "covid-chestxray-dataset"


@dataclass(frozen=True)
class Verification:
    """What verifying a data folder found."""

    metadata_sha256: str
    referenced_images: int
    present_images: int
    missing: list[str]

    @property
    def complete(self) -> bool:
        """True when every image referenced in images/ is there."""
        return not self.missing


def verify(root: Path, expected_sha256: str | None) -> Verification:
    """Check metadata.csv's hash and that every image it places in images/ exists and is non-empty."""
    metadata = root / "metadata.csv"
    if not metadata.is_file():
        raise FetchError(f"{metadata}: missing after checkout")
    digest = hashlib.sha256(metadata.read_bytes()).hexdigest()
    if expected_sha256 is not None and digest != expected_sha256:
        raise FetchError(f"{metadata}: sha256 {digest} is not the expected {expected_sha256}")
    with metadata.open(encoding="utf-8", newline="") as handle:
        names = [row["filename"] for row in csv.DictReader(handle) if row.get("folder") == "images"]
    missing = [n for n in names if not (root / "images" / n).is_file() or (root / "images" / n).stat().st_size == 0]
    return Verification(digest, len(names), len(names) - len(missing), missing)


def _git(*args: str, cwd: Path) -> str:
    if shutil.which("git") is None:
        raise FetchError("git is not installed; install it to fetch the dataset")
    result = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True)
    if result.returncode != 0:
        raise FetchError(f"git {' '.join(args)} failed in {cwd}: {result.stderr.strip() or result.stdout.strip()}")
    return result.stdout.strip()


def fetch(dest: Path | None = None, ref: str = PINNED_COMMIT, url: str = UPSTREAM_URL,
          expected_sha256: str | None = None) -> tuple[Path, Verification, bool]:
    """Fetch `url` at `ref` into `dest` and verify it; (folder, verification, whether anything was fetched)."""
    target = (dest or default_data_dir()).expanduser()
    expected = expected_sha256 or KNOWN_METADATA_SHA256.get(ref)
    marker = target / MARKER
    if marker.is_file() and marker.read_text().strip() == ref:
        existing = verify(target, expected)
        if existing.complete:
            return target, existing, False
        marker.unlink()  # files went missing since: fetch again to restore them
    target.mkdir(parents=True, exist_ok=True)
    if not (target / ".git").is_dir():
        _git("init", "--quiet", cwd=target)
    remotes = _git("remote", cwd=target).split()
    _git("remote", "set-url" if "origin" in remotes else "add", "origin", url, cwd=target)
    _git("fetch", "--quiet", "--depth", "1", "origin", ref, cwd=target)
    _git("-c", "advice.detachedHead=false", "checkout", "--quiet", "--force", "FETCH_HEAD", cwd=target)
    head = _git("rev-parse", "HEAD", cwd=target)
    if len(ref) == 40 and head != ref:
        raise FetchError(f"{target}: checked out {head}, expected {ref}")
    result = verify(target, expected)
    if not result.complete:
        raise FetchError(f"{target}: {len(result.missing)} image(s) referenced by metadata.csv are missing, "
                         f"e.g. {result.missing[0]}")
    marker.write_text(ref + "\n")
    return target, result, True
