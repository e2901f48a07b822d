"""Shared fixtures: the real data sets in the read-only shared folder (skipped cleanly when absent)."""
from __future__ import annotations

import os
import shutil
import tarfile
import tempfile
from pathlib import Path

import pytest

SHARED_ENV = "LTBENCH_SHARED_DATA"  # folder holding cifar10-jpg.tar.gz, mnist/, splits/
TEST_DATA_CACHE = Path.home() / ".cache" / "ltbench" / "test-data"  # writable copies of shared data


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The shared real-data folder: $LTBENCH_SHARED_DATA, else <repo>/../shared/data."""
    folder = Path(os.environ.get(SHARED_ENV) or Path(__file__).resolve().parents[2] / "shared" / "data")
    if not folder.is_dir():
        pytest.skip(f"shared real data not found at {folder} (set {SHARED_ENV} to the folder holding "
                    f"cifar10-jpg.tar.gz, mnist/ and splits/)")
    return folder


@pytest.fixture(scope="session")
def cifar10_folder(shared_data: Path) -> Path:
    """cifar10-jpg.tar.gz extracted once (and reused) under ~/.cache/ltbench/test-data/cifar10/.

    The shared folder is read-only, so the images go to the user cache; extraction happens in a
    temporary sibling folder that is renamed into place, so a half-extracted copy is never reused.
    """
    tarball = shared_data / "cifar10-jpg.tar.gz"
    if not tarball.is_file():
        pytest.skip(f"{tarball} not found (CIFAR-10 JPEG image folders)")
    target = TEST_DATA_CACHE / "cifar10"
    if not target.is_dir():
        TEST_DATA_CACHE.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=TEST_DATA_CACHE, prefix=".cifar10-"))
        try:
            with tarfile.open(tarball) as tar:
                tar.extractall(tmp, filter="data")
            tmp.rename(target)
        except OSError:
            if not target.is_dir():  # another session may have renamed its copy into place first
                raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return target
