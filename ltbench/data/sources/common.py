"""What every source module shares: one-line errors, reading plain or gzipped files, and the torchvision-backed
sources' ``--download`` (which leaves no empty folders behind when it fails)."""
from __future__ import annotations

import gzip
import os
from pathlib import Path

from ...errors import DataError
from ..base import DatasetSource


def _not_found(source: DatasetSource, root: Path, detail: str = "") -> DataError:
    return DataError(f"dataset '{source.name}' not found under {root}{detail}: {source.how_to_get()}")


def _one_line(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {' '.join(str(exc).split())}"


def _open_binary(path: Path):
    return gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")



def _remove_empty_folders(top: Path) -> None:
    """rmdir every empty folder under ``top`` (and ``top``), deepest first; anything holding a file stays."""
    for folder, _, _ in os.walk(top, topdown=False):
        try:
            os.rmdir(folder)
        except OSError:
            pass


class _TorchvisionSource(DatasetSource):
    torchvision_name = ""  # torchvision.datasets class that can download this data set
    download_url = ""  # where torchvision downloads it from (its class's url / first mirror)

    def manual_download(self, root: Path) -> str:
        """Where to fetch the files by hand and where to put them (from torchvision's own URLs)."""
        raise NotImplementedError

    def locate(self, root: Path, download: bool) -> Path:
        """The data folder; fetch it with torchvision first if asked and absent. A failed download says
        where to get the files by hand and leaves no empty folders behind (torchvision creates them first)."""
        folder = self.find(root)
        if folder is None and download:
            import torchvision.datasets

            root = Path(root)
            first_new = root if not root.exists() else None  # the outermost folder this attempt creates
            while first_new is not None and not first_new.parent.exists():
                first_new = first_new.parent
            present = set() if first_new is not None or not root.is_dir() else {p.name for p in root.iterdir()}
            try:
                getattr(torchvision.datasets, self.torchvision_name)(str(root), download=True)
            except Exception as exc:  # network, disk or checksum: the user's fix is the same
                for new in [first_new] if first_new is not None else \
                        [p for p in root.iterdir() if p.name not in present] if root.is_dir() else []:
                    _remove_empty_folders(new)
                raise DataError(f"--download of '{self.name}' into {root} failed ({_one_line(exc)}); without "
                                f"network: {self.manual_download(root)}, then run again without --download (or "
                                f"pass --data-root DIR where the data is)") from None
            folder = self.find(root)
        if folder is None:
            raise _not_found(self, root)
        return folder

