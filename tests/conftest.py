"""Shared fixtures: the real data sets in the read-only shared folder (skipped cleanly when absent)."""
from __future__ import annotations

import os
import shutil
import tarfile
import tempfile
from pathlib import Path, PurePosixPath

import pytest

SHARED_ENV = "LTBENCH_SHARED_DATA"  # folder holding cifar10-jpg.tar.gz, mnist/, splits/
TEST_DATA_CACHE = Path.home() / ".cache" / "ltbench" / "test-data"  # writable copies of shared data


def extract_tar(tarball: Path, dest: Path) -> None:
    """Extract with tarfile's "data" filter where this Python has it (3.10.12+, 3.11.4+, 3.12+). Before
    that (pyproject allows any 3.10), ``extractall`` has no ``filter`` argument: refuse what the filter
    refuses by hand (absolute or '..' member paths, links, devices, FIFOs) and drop special mode bits and
    foreign owners, so an archive can never write outside ``dest``."""
    with tarfile.open(tarball) as tar:
        if hasattr(tarfile, "data_filter"):
            tar.extractall(dest, filter="data")
            return
        members, root = tar.getmembers(), Path(dest).resolve()
        for member in members:
            parts = PurePosixPath(member.name).parts
            inside = root in (root / member.name).resolve().parents
            if member.name.startswith("/") or ".." in parts or not inside or not (member.isfile() or member.isdir()):
                raise tarfile.TarError(f"{tarball}: refusing member {member.name!r} (absolute, '..', outside the "
                                       f"target, a link or a special file)")
            member.mode = (member.mode | (0o700 if member.isdir() else 0o600)) & 0o755
            member.uid, member.gid, member.uname, member.gname = os.getuid(), os.getgid(), "", ""
        tar.extractall(dest, members=members)


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
            extract_tar(tarball, tmp)
            tmp.rename(target)
        except OSError:
            if not target.is_dir():  # another session may have renamed its copy into place first
                raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return target


@pytest.fixture()
def run_folder(tmp_path: Path):
    """make_run bound to this test's results folder (tmp_path): ``run_folder("ce-0", "ce", 0, 70.0, ...)`` writes
    runs/ce-0/{config,metrics}.json (and per_class.csv, test_logits.npz when given) like a finished run."""
    from tests.helpers import make_run

    return lambda name, *args, **kwargs: make_run(tmp_path, name, *args, **kwargs)


@pytest.fixture()
def fault_plugin(tmp_path: Path):
    """write_fault_plugin into tmp_path/plugins/NAME.py; returns that plugins folder (for --plugins)."""
    from tests.helpers import write_fault_plugin

    def write(name: str, base: str = "crt", **kwargs) -> Path:
        folder = tmp_path / "plugins"
        write_fault_plugin(folder / f"{name.replace('-', '_')}.py", name, base, **kwargs)
        return folder

    return write


@pytest.fixture(scope="module")
def ce_alone(tmp_path_factory):
    """The test logits of a FAST `ce` run alone in a fresh results folder (what reuse must reproduce bit for bit)."""
    from tests.helpers import fast_run, logits_of

    out = tmp_path_factory.mktemp("ce-alone")
    fast_run(out, "ce", "ce")
    return logits_of(out, "ce")
