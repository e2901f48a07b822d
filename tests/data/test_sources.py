"""Dataset sources: layouts, parsing, error messages, decode cache, and the docs/protocol.md check numbers."""
from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ltbench.data import sources
from ltbench.data.base import ArraySplit, FileSplit
from ltbench.data.longtail import group_sizes, lt_counts, lt_subset
from ltbench.errors import DataError
from ltbench.registry import DATASETS
from tests.helpers import png_header, write_image, write_list, write_split_dataset

CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def source(name: str):
    return DATASETS.create(name)


# --- in-memory sources ------------------------------------------------------------------------------

def test_digits_shapes_balanced_test_and_disjoint_pool():
    from sklearn.datasets import load_digits

    data = source("digits-lt").load(Path("/nonexistent"))
    train, test = data.train, data.test
    assert train.images.dtype == test.images.dtype == np.uint8 and train.labels.dtype == np.int64
    assert train.images.shape[1:] == (8, 8, 1) and train.images.max() == 255
    assert np.bincount(test.labels).tolist() == [30] * 10
    assert len(train) + len(test) == 1797 and np.bincount(train.labels).min() >= 140
    # the two parts together are exactly the 1,797 digits (as a multiset), so they are disjoint
    everything = (load_digits().images.astype(np.int64) * 255 // 16).astype(np.uint8).reshape(1797, -1)
    rows = np.concatenate([train.images, test.images]).reshape(1797, -1)
    assert np.array_equal(np.unique(rows, axis=0, return_counts=True)[1],
                          np.unique(everything, axis=0, return_counts=True)[1])
    assert np.array_equal(source("digits-lt").load(Path(".")).test.images, test.images)  # fixed seed


def test_digits_long_tail_subset():
    src = source("digits-lt")
    pool = src.load(Path(".")).train
    kept = lt_subset(pool.labels, 10, src.default_imbalance)
    counts = np.bincount(pool.labels[kept], minlength=10)
    img_max = np.bincount(pool.labels).min()
    assert counts.tolist() == lt_counts(img_max, 10, 20)
    assert counts[0] == img_max and counts[-1] == img_max // 20 >= 5


def test_synthetic_is_fixed_and_learnable():
    src = source("synthetic")
    a, b = src.load(Path(".")), src.load(Path("."))
    assert a.train.images.shape == (2000, 16, 16, 3) and a.test.images.shape == (500, 16, 16, 3)
    assert np.array_equal(a.train.images, b.train.images)
    means = np.stack([a.train.images[a.train.labels == c].mean(0).ravel() for c in range(10)])
    dist = ((a.test.images.reshape(500, 1, -1).astype(float) - means[None]) ** 2).sum(-1)
    assert (dist.argmin(1) == a.test.labels).mean() > 0.9  # nearest class mean separates the classes


# --- CIFAR pickles (torchvision layout), generated ---------------------------------------------------

def py2_pickle(obj) -> bytes:
    """``obj`` pickled as the official CIFAR files are: Python 2 cPickle, protocol 2, byte strings as
    (SHORT_)BINSTRING and arrays as numpy.core.multiarray._reconstruct + numpy.ndarray + numpy.dtype."""
    import io
    import struct

    class Py2Pickler(pickle._Pickler):
        dispatch = dict(pickle._Pickler.dispatch)

        def save_bytes(self, data):
            size = len(data)
            self.write((pickle.SHORT_BINSTRING + bytes([size]) if size < 256
                        else pickle.BINSTRING + struct.pack("<i", size)) + data)
            self.memoize(data)

        dispatch[bytes] = save_bytes

    buffer = io.BytesIO()
    Py2Pickler(buffer, protocol=2).dump(obj)
    return buffer.getvalue().replace(b"cnumpy._core.multiarray\n", b"cnumpy.core.multiarray\n")


def write_cifar_pickles(folder: Path, num_classes: int, per_class: int, test_per_class: int,
                        protocol: int | None = None) -> None:
    """Fake torchvision-layout CIFAR batches in the official files' format (``py2_pickle``; or as Python 3's
    pickle with PROTOCOL writes them) with their keys; image 0 of the train set has a known pixel pattern."""
    folder.mkdir(parents=True)
    rng = np.random.RandomState(0)
    cifar10 = num_classes == 10
    key = b"labels" if cifar10 else b"fine_labels"

    def batch(labels: np.ndarray) -> dict:
        return {b"batch_label": b"training batch 1 of 5", key: labels.tolist(),
                b"data": np.zeros((len(labels), 3072), np.uint8),
                b"filenames": [f"img_{i}.png".encode() for i in range(len(labels))]}

    train_labels = rng.permutation(np.repeat(np.arange(num_classes), per_class))
    test = batch(np.repeat(np.arange(num_classes), test_per_class))
    if cifar10:
        batches = {f"data_batch_{i + 1}": batch(part) for i, part in enumerate(np.split(train_labels, 5))}
        batches |= {"test_batch": test, "batches.meta": {b"label_names": [n.encode() for n in CIFAR10_CLASSES],
                                                         b"num_cases_per_batch": 10000, b"num_vis": 3072}}
    else:
        batches = {"train": batch(train_labels), "test": test,
                   "meta": {b"fine_label_names": [f"c{i:03d}".encode() for i in range(100)]}}
    first = batches["data_batch_1" if cifar10 else "train"][b"data"][0]
    first[0 * 1024 + 1 * 32 + 2], first[1 * 1024 + 1 * 32 + 2], first[2 * 1024 + 1 * 32 + 2] = 10, 20, 30
    for name, content in batches.items():
        (folder / name).write_bytes(py2_pickle(content) if protocol is None else pickle.dumps(content, protocol))


@pytest.fixture(scope="module")
def cifar_pickles(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("cifar")
    write_cifar_pickles(root / "cifar-10-batches-py", 10, 5000, 1000)
    write_cifar_pickles(root / "cifar-100-python", 100, 500, 100)
    return root


@pytest.mark.parametrize("name, sizes", [("cifar10-lt", (12406, 13996, 20431)),
                                         ("cifar100-lt", (10847, 12608, 19573))])
def test_cifar_pickles_and_protocol_lt_sizes(cifar_pickles, name, sizes):
    data = source(name).load(cifar_pickles)
    num_classes = source(name).num_classes
    assert data.info["layout"] == "torchvision" and len(data.train) == 50000 and len(data.test) == 10000
    assert data.train.images.shape == (50000, 32, 32, 3) and data.train.images.dtype == np.uint8
    assert len(data.class_names) == num_classes and np.bincount(data.test.labels).min() == 10000 // num_classes
    assert [len(lt_subset(data.train.labels, num_classes, f)) for f in (100, 50, 10)] == list(sizes)
    if name == "cifar10-lt":
        assert data.class_names == CIFAR10_CLASSES
        # the pickle row is three 32x32 planes (R, G, B): pixel (row 1, column 2) of image 0
        assert data.train.images[0, 1, 2].tolist() == [10, 20, 30]
        assert data.train.images[0, 2, 1].tolist() == [0, 0, 0]


def test_cifar_pickle_folder_given_directly_and_corrupt_pickle(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    write_cifar_pickles(folder, 10, 2, 1)
    assert source("cifar10-lt").find(folder) == folder
    assert len(source("cifar10-lt").load(folder).train) == 20
    (folder / "data_batch_3").write_bytes((folder / "data_batch_3").read_bytes()[:100])
    with pytest.raises(DataError, match="data_batch_3"):
        source("cifar10-lt").load(tmp_path)


@pytest.mark.parametrize("protocol", [4, 5])
def test_cifar_pickles_resaved_by_python3_load_too(tmp_path, protocol):
    folder = tmp_path / "py3" / "cifar-10-batches-py"
    write_cifar_pickles(tmp_path / "official", 10, 2, 1)
    assert b"cnumpy.core.multiarray\n_reconstruct" in (tmp_path / "official" / "data_batch_1").read_bytes()
    write_cifar_pickles(folder, 10, 2, 1, protocol=protocol)  # the same batches, saved by Python 3's pickle
    assert (folder / "data_batch_1").read_bytes()[:2] == bytes([0x80, protocol])
    data = source("cifar10-lt").load(tmp_path / "py3")
    assert len(data.train) == 20 and data.train.images[0, 1, 2].tolist() == [10, 20, 30]


class _Payload:
    """What a crafted batch file carries: unpickling it calls ``call(*args)``."""

    def __init__(self, call, *args):
        self.call, self.args = call, args

    def __reduce__(self):
        return self.call, self.args


def _crafted(kind: str, marker: Path) -> bytes:
    import os

    payloads = {
        "exec": _Payload(exec, f"open({str(marker)!r}, 'w').close()"),
        "os.system": _Payload(os.system, f"touch '{marker}'"),
        "pathlib": _Payload(Path.touch, marker),
    }
    if kind == "nested":  # a well-formed batch with the payload deep inside its labels
        return pickle.dumps({b"data": np.zeros((1, 3072), np.uint8), b"labels": [0, [payloads["exec"]]]}, protocol=2)
    if kind == "object-array":  # only numpy's allowed constructors, but an object array
        return pickle.dumps({b"data": np.array([b"x", 1], dtype=object), b"labels": [0]})
    return pickle.dumps(payloads[kind], protocol=2)


@pytest.mark.parametrize("kind", ["exec", "os.system", "pathlib", "nested", "object-array"])
def test_crafted_cifar_pickle_runs_no_code_and_is_one_line(tmp_path, kind):
    folder = tmp_path / "cifar-10-batches-py"
    write_cifar_pickles(folder, 10, 2, 1)
    marker = tmp_path / "pwned"
    (folder / "data_batch_2").write_bytes(_crafted(kind, marker))
    with pytest.raises(DataError) as err:
        source("cifar10-lt").load(tmp_path)
    message = str(err.value)
    assert str(folder / "data_batch_2") in message and "\n" not in message, message
    assert not marker.exists()
    if kind in ("exec", "os.system", "pathlib"):
        assert "refused to unpickle" in message
        with open(folder / "data_batch_2", "rb") as f:  # the file has teeth: plain pickle runs its payload
            pickle.load(f, encoding="bytes")
        assert marker.exists()


@pytest.mark.parametrize("name, expected", [
    ("cifar10-lt", "download https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz and unpack it in {root}"),
    ("cifar100-lt", "download https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz and unpack it in {root}"),
    ("mnist-lt", "from https://ossci-datasets.s3.amazonaws.com/mnist/ into {root}/MNIST/raw"),
    ("fashion-mnist-lt", "from http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/ into {root}/FashionMNIST/raw"),
])
def test_download_without_network_names_the_manual_source_and_leaves_no_folders(tmp_path, monkeypatch, name,
                                                                               expected):
    """torchvision itself (its folders made first), with every URL unreachable: one line that says where to
    get the files by hand (not --download again), and the folders it created are gone."""
    import urllib.error
    import urllib.request

    import torchvision.datasets

    def offline(*args, **kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    src = source(name)
    tv = getattr(torchvision.datasets, src.torchvision_name)
    assert src.download_url in (getattr(tv, "url", None), *getattr(tv, "mirrors", ())[:1])  # torchvision's own
    existing = tmp_path / "data"
    (existing / "other").mkdir(parents=True)  # the user's: kept
    for root, outermost in ((tmp_path / "new" / "data", tmp_path / "new"), (existing, None)):
        with pytest.raises(DataError) as err:
            src.load(root, download=True)
        message = str(err.value)
        assert "\n" not in message and message.startswith(f"--download of '{name}' into {root} failed (")
        assert "Temporary failure in name resolution" in message and expected.format(root=root) in message
        assert "without --download" in message and "or --download" not in message
        assert outermost is None or not outermost.exists()
    assert [p.name for p in existing.iterdir()] == ["other"]


def _tarball(path: Path, members: dict) -> Path:
    """A .tar.gz of ``{name: bytes (a file) | None (a folder) | ('symlink', target)}``."""
    import io
    import tarfile

    with tarfile.open(path, "w:gz") as tar:
        for name, content in members.items():
            info = tarfile.TarInfo(name)
            if content is None:
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                tar.addfile(info)
            elif isinstance(content, tuple):
                info.type, info.linkname = tarfile.SYMTYPE, content[1]
                tar.addfile(info)
            else:
                info.size, info.mode = len(content), 0o4755  # setuid: dropped on extraction
                tar.addfile(info, io.BytesIO(content))
    return path


@pytest.mark.parametrize("filter_available", [True, False])
def test_test_data_extraction_works_with_and_without_tarfile_filters(tmp_path, monkeypatch, filter_available):
    """tests/conftest.py extracts the shared CIFAR tarball on every Python that pyproject allows: with the
    "data" filter (3.11.4+) or, before it existed (3.10.0-3.10.11, 3.11.0-3.11.3), with the same refusals."""
    import tarfile

    from tests.conftest import extract_tar

    if not filter_available:
        monkeypatch.delattr(tarfile, "data_filter", raising=False)
    elif not hasattr(tarfile, "data_filter"):
        pytest.skip("this Python's tarfile has no extraction filters")
    good = _tarball(tmp_path / "good.tar.gz", {"cifar10": None, "cifar10/train": None, "cifar10/train/a.png": b"x"})
    extract_tar(good, tmp_path / "out")
    extracted = tmp_path / "out" / "cifar10" / "train" / "a.png"
    assert extracted.read_bytes() == b"x" and not extracted.stat().st_mode & 0o7000
    for name, evil in [("dotdot", {"../escaped.txt": b"x"}), ("absolute", {str(tmp_path / "escaped.txt"): b"x"}),
                       ("symlink", {"link": ("symlink", str(tmp_path))})]:
        try:  # refused, or (the filter, for an absolute name) extracted inside the target with the '/' stripped
            extract_tar(_tarball(tmp_path / f"{name}.tar.gz", evil), tmp_path / f"out-{name}")
            assert name == "absolute" and filter_available
        except tarfile.TarError:
            pass
        assert not (tmp_path / "escaped.txt").exists() and not (tmp_path / f"out-{name}" / "link").exists()


# --- CIFAR image folders: decoding and the decode cache -----------------------------------------------

def write_image_folders(root: Path, num_classes: int = 10, size: int = 32) -> None:
    for split in ("train", "test"):
        for c in range(num_classes):
            (root / split / f"class{c}").mkdir(parents=True)
            write_image(root / split / f"class{c}" / "0.png", 25 * c, size)
            write_image(root / split / f"class{c}" / "1.jpg", 25 * c, size)


def test_image_folder_cache_falls_back_when_data_folder_is_read_only(tmp_path, monkeypatch):
    data = tmp_path / "cifar10"
    write_image_folders(data)
    monkeypatch.setenv(sources.CACHE_ENV, str(tmp_path / "cache"))
    data.chmod(0o555)
    try:
        loaded = source("cifar10-lt").load(tmp_path)
    finally:
        data.chmod(0o755)
    cache = Path(loaded.info["cache"])
    assert loaded.info["layout"] == "image folders" and loaded.info["path"] == str(data)
    assert cache.parent == tmp_path / "cache" and cache.name.startswith("cifar10-lt-")
    assert not any(p.suffix == ".npz" for p in data.iterdir())  # nothing written into the data folder
    assert len(loaded.train) == 20 and loaded.class_names == [f"class{c}" for c in range(10)]
    assert loaded.train.images[2, 0, 0].tolist() == [25, 25, 25]  # class1 png, exact
    # a changed listing is decoded again (and now the folder is writable: cache next to the data)
    write_image(data / "train" / "class0" / "2.png", 0, 32)
    again = source("cifar10-lt").load(tmp_path)
    assert not again.info["cache_hit"] and len(again.train) == 21
    assert Path(again.info["cache"]) == data / "ltbench-cifar10-lt.npz"


def test_an_image_replaced_under_its_name_is_decoded_again_and_is_other_data(tmp_path, monkeypatch):
    """The decode cache is keyed by every file's size and modification time, not its name alone: images
    replaced under the same names (a class made black) are new pixels and a new data fingerprint, hence new
    stage keys, never the old pixels from the cache."""
    import os

    from ltbench.data import build_data

    monkeypatch.delenv(sources.CACHE_ENV, raising=False)
    data = tmp_path / "cifar10"
    write_image_folders(data)
    first = source("cifar10-lt").load(tmp_path)
    fingerprint = build_data("cifar10-lt", tmp_path, 1, "exp", 0, 0).fingerprint
    assert source("cifar10-lt").load(tmp_path).info["cache_hit"]
    replaced = data / "train" / "class1" / "0.png"
    before = replaced.stat()
    write_image(replaced, 0, 32)  # class1's PNG made black, under the same name
    os.utime(replaced, ns=(before.st_atime_ns, before.st_mtime_ns + 10**9))  # a later mtime, whatever the clock
    again = source("cifar10-lt").load(tmp_path)
    assert not again.info["cache_hit"]
    assert first.train.images[2, 0, 0].tolist() == [25, 25, 25] and again.train.images[2, 0, 0].tolist() == [0, 0, 0]
    assert build_data("cifar10-lt", tmp_path, 1, "exp", 0, 0).fingerprint != fingerprint
    assert source("cifar10-lt").load(tmp_path).info["cache_hit"]  # and the new listing is cached in turn


def test_image_folder_bad_images_name_the_file(tmp_path):
    write_image_folders(tmp_path, size=32)
    bad = tmp_path / "test" / "class3" / "9.png"
    write_image(bad, 0, 16)
    with pytest.raises(DataError, match=f"{bad}: image is 16x16, expected 32x32"):
        source("cifar10-lt").load(tmp_path)
    bad.write_bytes(b"not an image")
    with pytest.raises(DataError, match=f"{bad}: cannot decode image"):
        source("cifar10-lt").load(tmp_path)


@pytest.mark.parametrize("side, pixels", [(30000, "900,000,000"), (10000, "100,000,000")])
def test_image_folder_decompression_bomb_is_refused_naming_file_and_limit(tmp_path, side, pixels):
    """A PNG header claiming 30000 x 30000 pixels (Pillow raises past twice its limit) or 10000 x 10000 (Pillow
    only warns between its limit and twice that, then decodes): both refused before decoding, one line."""
    write_image_folders(tmp_path, num_classes=10)
    bomb = tmp_path / "train" / "class3" / "2.png"
    bomb.write_bytes(png_header(side, side))
    with pytest.raises(DataError) as err:
        source("cifar10-lt").load(tmp_path)
    assert str(err.value) == (f"image {bomb} claims {pixels} pixels, over the limit of 89,478,485 pixels (Pillow's "
                              f"MAX_IMAGE_PIXELS): a decompression bomb or a mistaken file; replace it with the real "
                              f"image")
    assert not any(p.suffix == ".npz" for p in tmp_path.iterdir())  # no cache of a half-decoded folder


def test_a_damaged_decode_cache_is_rebuilt_with_a_note(tmp_path, monkeypatch):
    """A decode cache cut to half its bytes (a full disk, a killed copy): decoded again and rewritten, with one
    line saying so (the run prints it as a warning), never a traceback."""
    monkeypatch.delenv(sources.CACHE_ENV, raising=False)
    write_image_folders(tmp_path / "cifar10")
    first = source("cifar10-lt").load(tmp_path)
    cache = Path(first.info["cache"])
    whole = cache.read_bytes()
    cache.write_bytes(whole[:len(whole) // 2])
    again = source("cifar10-lt").load(tmp_path)
    assert not again.info["cache_hit"] and np.array_equal(again.train.images, first.train.images)
    assert again.info["warnings"] == [f"decode cache {cache} is damaged (BadZipFile: File is not a zip file); "
                                      f"decoding the images again and rewriting it"]
    third = source("cifar10-lt").load(tmp_path)  # rewritten whole
    assert third.info["cache_hit"] and "warnings" not in third.info


def test_cifar10_real_image_folders_and_decode_cache(cifar10_folder, monkeypatch):
    monkeypatch.delenv(sources.CACHE_ENV, raising=False)
    cache = cifar10_folder / "ltbench-cifar10-lt.npz"
    cache.unlink(missing_ok=True)  # prove that a first load writes it
    src = source("cifar10-lt")
    assert src.find(cifar10_folder.parent) == cifar10_folder  # <root>/cifar10/{train,test}
    first = src.load(cifar10_folder)
    assert not first.info["cache_hit"] and first.info["cache"] == str(cache) and cache.is_file()
    assert len(first.train) == 50000 and len(first.test) == 10000
    assert first.class_names == CIFAR10_CLASSES
    assert np.bincount(first.train.labels).tolist() == [5000] * 10
    assert np.bincount(first.test.labels).tolist() == [1000] * 10
    assert first.train.images.shape == (50000, 32, 32, 3) and first.train.images.dtype == np.uint8

    def no_decoding(*args):
        raise AssertionError("decoded again although the cache is valid")

    monkeypatch.setattr(sources.cifar, "_decode_images", no_decoding)  # where _Cifar looks it up
    second = src.load(cifar10_folder.parent)
    assert second.info["cache_hit"] and np.array_equal(second.train.images, first.train.images)
    assert [len(lt_subset(second.train.labels, 10, f)) for f in (100, 50, 10)] == [12406, 13996, 20431]


# --- MNIST (IDX) --------------------------------------------------------------------------------------

def test_mnist_real_gz(shared_data):
    if not (shared_data / "mnist" / "MNIST" / "raw").is_dir():
        pytest.skip(f"{shared_data / 'mnist/MNIST/raw'} not found")
    data = source("mnist-lt").load(shared_data)  # finds <root>/mnist/MNIST/raw/*.gz
    assert data.info["path"] == str(shared_data / "mnist" / "MNIST" / "raw")
    assert data.train.images.shape == (60000, 28, 28, 1) and data.test.images.shape == (10000, 28, 28, 1)
    assert sorted(np.unique(data.train.labels)) == list(range(10)) and data.train.labels.dtype == np.int64
    assert abs(data.train.images.mean() / 255 - 0.1307) < 1e-3


def write_idx(path: Path, array: np.ndarray) -> None:
    header = bytes([0, 0, 8, array.ndim]) + np.asarray(array.shape, ">u4").tobytes()
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def write_mnist(folder: Path, n_train: int = 30, n_test: int = 10) -> None:
    folder.mkdir(parents=True)
    rng = np.random.RandomState(0)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        write_idx(folder / f"{prefix}-images-idx3-ubyte", rng.randint(0, 256, (n, 28, 28)))
        write_idx(folder / f"{prefix}-labels-idx1-ubyte", np.arange(n) % 10)


def test_mnist_generated_plain_idx_layouts(tmp_path):
    write_mnist(tmp_path / "MNIST" / "raw")
    data = source("mnist-lt").load(tmp_path)
    assert data.train.images.shape == (30, 28, 28, 1) and data.test.labels.tolist() == list(range(10))
    assert source("mnist-lt").find(tmp_path / "MNIST" / "raw") == tmp_path / "MNIST" / "raw"
    assert source("fashion-mnist-lt").find(tmp_path) is None  # looks for FashionMNIST/raw
    write_mnist(tmp_path / "FashionMNIST" / "raw", n_train=20)
    assert len(source("fashion-mnist-lt").load(tmp_path).train) == 20


def test_mnist_truncated_or_foreign_idx_is_a_data_error(tmp_path):
    folder = tmp_path / "MNIST" / "raw"
    write_mnist(folder)
    images = folder / "train-images-idx3-ubyte"
    images.write_bytes(images.read_bytes()[:-5])
    with pytest.raises(DataError, match=f"{images}: truncated or malformed IDX"):
        source("mnist-lt").load(tmp_path)
    images.write_bytes(b"GIF89a" + bytes(100))
    with pytest.raises(DataError, match=f"{images}: not a uint8 IDX file"):
        source("mnist-lt").load(tmp_path)


class _CountingReader:
    """A file object that counts the bytes read through it."""

    def __init__(self, f, counts: list):
        self.f, self.counts = f, counts

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.f.close()

    def read(self, size=-1):
        data = self.f.read(size)
        self.counts.append(len(data))
        return data


def test_mnist_gzip_bomb_is_refused_without_reading_it_whole(tmp_path, monkeypatch):
    """train-images .gz: a valid header for 30 images, their pixels, then 64 MiB of zeros (64 KiB gzipped):
    read no further than one byte past what the header announces, refused with one line naming the file."""
    import gzip

    folder = tmp_path / "MNIST" / "raw"
    write_mnist(folder)
    plain = folder / "train-images-idx3-ubyte"
    bomb = folder / "train-images-idx3-ubyte.gz"
    with gzip.open(bomb, "wb") as f:
        f.write(plain.read_bytes())
        for _ in range(64):
            f.write(bytes(2**20))
    plain.unlink()
    counts: list[int] = []
    real = sources.mnist._open_binary
    monkeypatch.setattr(sources.mnist, "_open_binary", lambda path: _CountingReader(real(path), counts))
    with pytest.raises(DataError) as err:
        source("mnist-lt").load(tmp_path)
    assert str(err.value) == (f"{bomb}: holds more than its header announces (shape (30, 28, 28): 23,520 bytes of "
                              f"pixels); delete it and fetch it again")
    assert sum(counts) <= 16 + 30 * 28 * 28 + 1  # the header, the pixels and one byte: not 64 MiB
    # a header announcing 2^31 images of 28 x 28: refused from the header, nothing more read
    with gzip.open(bomb, "wb") as f:
        f.write(bytes([0, 0, 8, 3]) + np.asarray([2**31, 28, 28], ">u4").tobytes() + bytes(1000))
    counts.clear()
    with pytest.raises(DataError, match=rf"{bomb}: its header announces shape \(2147483648, 28, 28\) "
                                        rf"\(1,683,627,180,032 bytes\), more than ltbench reads from one IDX file "
                                        rf"\(1,073,741,824 bytes"):
        source("mnist-lt").load(tmp_path)
    assert sum(counts) == 16


# --- split lists: ImageNet-LT, Places-LT, iNat18 -----------------------------------------------------

def test_imagenet_lt_lists_in_splits_folder_images_in_dataset_dir(tmp_path):
    lines = write_split_dataset(tmp_path / "ImageNet_LT", ["n01", "n02", "n03"], {"train": 3, "val": 1})
    write_list(tmp_path / "splits" / "ImageNet_LT_train.txt.gz", lines["train"])
    write_list(tmp_path / "splits" / "ImageNet_LT_val.txt", lines["val"])
    write_list(tmp_path / "ImageNet_LT" / "ImageNet_LT_test.txt", lines["val"][::-1] + [""])
    src = source("imagenet-lt")
    assert src.long_tailed_pool and src.num_classes == 1000
    data = src.load(tmp_path)
    assert isinstance(data.train, FileSplit) and data.train.root == tmp_path / "ImageNet_LT"
    assert len(data.train) == 9 and len(data.val) == 3 and len(data.test) == 3
    assert data.train.labels.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2] and data.test.labels.tolist() == [2, 1, 0]
    assert all((data.train.root / p).is_file() for p in data.train.paths)
    assert data.class_names[:4] == ["n01", "n02", "n03", "3"]
    assert data.train.list_file == tmp_path / "splits" / "ImageNet_LT_train.txt.gz"
    assert src.find(tmp_path) == tmp_path / "ImageNet_LT"


def test_places_lt_and_inat18_lists_next_to_images(tmp_path):
    lines = write_split_dataset(tmp_path, ["airfield", "alley"], {"train": 2, "val": 1, "test": 1})
    for split in ("train", "val", "test"):
        write_list(tmp_path / "Places_LT" / f"Places_LT_{split}.txt", lines[split])
    data = source("places-lt").load(tmp_path)
    assert data.train.root == tmp_path and data.class_names[:2] == ["airfield", "alley"]
    assert (len(data.train), len(data.val), len(data.test)) == (4, 2, 2)
    for split in ("train", "val"):
        write_list(tmp_path / f"iNaturalist18_{split}.txt", lines[split])
    inat = source("inat18").load(tmp_path)
    assert inat.test.list_file == tmp_path / "iNaturalist18_val.txt"
    assert inat.val is None and "val" in inat.info["test"]  # its val list is its test set: nothing to tune on


def test_split_list_errors_name_file_line_and_places(tmp_path):
    lines = write_split_dataset(tmp_path, ["a", "b"], {"train": 2, "val": 1, "test": 1})
    for split in ("train", "test"):
        write_list(tmp_path / f"Places_LT_{split}.txt", lines[split])
    with pytest.raises(DataError) as err:
        source("places-lt").load(tmp_path)
    message = str(err.value)
    assert "Places_LT_val.txt" in message and str(tmp_path / "splits") in message and "\n" not in message
    bad = tmp_path / "Places_LT_val.txt"
    write_list(bad, [lines["val"][0], "", "val/b/0.jpg one"])
    with pytest.raises(DataError, match=rf"{bad}:3: expected '<relative/path> <integer label>', got 'val/b/0.jpg one'"):
        source("places-lt").load(tmp_path)
    write_list(bad, ["val/with space.jpg 1"])
    with pytest.raises(DataError, match=rf"{bad}:1: expected"):
        sources.read_split_list(bad)
    write_list(bad, ["val/a/missing.jpg 0"])
    with pytest.raises(DataError, match=f"first image {tmp_path / 'val/a/missing.jpg'} does not exist"):
        source("places-lt").load(tmp_path)


def places_lt_beside(tmp_path: Path, folder: str) -> tuple[Path, dict]:
    """A tiny Places-LT under tmp_path/data (val and test lists written, the train list left to the test) and one
    image, tmp_path/FOLDER/0.jpg, outside it."""
    root = tmp_path / "data"
    lines = write_split_dataset(root, ["a", "b"], {"train": 2, "val": 1, "test": 1})
    (tmp_path / folder).mkdir()
    write_image(tmp_path / folder / "0.jpg", 7, 8)
    for split in ("val", "test"):
        write_list(root / f"Places_LT_{split}.txt", lines[split])
    return root, lines


@pytest.mark.parametrize("bad", ["/etc/hostname", "../outside/0.jpg", "train/a/../../../outside/0.jpg",
                                 "C:\\images\\0.jpg", "..\\outside\\0.jpg"])
def test_split_list_paths_leaving_the_data_root_are_refused_unless_allowed(tmp_path, monkeypatch, bad):
    root, lines = places_lt_beside(tmp_path, "outside")
    train_list = root / "Places_LT_train.txt"
    write_list(train_list, [lines["train"][0], f"{bad} 1", *lines["train"][1:]])
    monkeypatch.delenv(sources.OUTSIDE_ROOT_ENV, raising=False)
    with pytest.raises(DataError) as err:
        source("places-lt").load(root)
    assert str(err.value).startswith(f"{train_list}:2: {bad!r} leaves the data root")
    assert "LTBENCH_ALLOW_OUTSIDE_ROOT=1" in str(err.value) and "\n" not in str(err.value)
    if bad == "../outside/0.jpg":  # the user's explicit opt-in: followed (and still checked like any path)
        monkeypatch.setenv(sources.OUTSIDE_ROOT_ENV, "1")
        data = source("places-lt").load(root)
        assert data.train.paths[1] == bad and data.train.fingerprint()


def test_allowed_absolute_list_paths_are_followed(tmp_path, monkeypatch):
    """README: LTBENCH_ALLOW_OUTSIDE_ROOT=1 follows absolute list paths too (images kept on another disk)."""
    import torch

    from ltbench.data import build_data
    from ltbench.data.loaders import FileLoader

    root, lines = places_lt_beside(tmp_path, "elsewhere")
    write_list(root / "Places_LT_train.txt", [lines["train"][0], f"{tmp_path / 'elsewhere' / '0.jpg'} 1",
                                              *lines["train"][1:]])
    monkeypatch.setenv(sources.OUTSIDE_ROOT_ENV, "1")
    data = build_data("places-lt", root, None)
    assert data.fingerprint  # every listed image checked: the absolute one is where the list says
    loader = FileLoader(data.train, 2, (0.5,) * 3, (0.5,) * 3, 8, torch.device("cpu"), workers=0)
    assert sum(len(batch["y"]) for batch in loader.batches(2)) == 5


def _escaping_links(tmp_path: Path) -> tuple[Path, Path, Path]:
    """Places-LT lists whose paths all stay under the image root, where train/a/link.jpg is a symbolic link to a
    file outside it and train/linked is a linked folder outside it; plus a link that stays inside."""
    root = tmp_path / "data"
    lines = write_split_dataset(root, ["a", "b"], {"train": 2, "val": 1, "test": 1})
    outside = tmp_path / "outside"
    outside.mkdir()
    write_image(outside / "0.jpg", 7, 8)
    (root / "train" / "a" / "link.jpg").symlink_to(outside / "0.jpg")
    (root / "train" / "linked").symlink_to(outside, target_is_directory=True)
    (root / "train" / "b" / "inside.jpg").symlink_to(root / "train" / "a" / "0.jpg")
    for split in ("val", "test"):
        write_list(root / f"Places_LT_{split}.txt", lines[split])
    return root, root / "Places_LT_train.txt", outside


@pytest.mark.parametrize("listed", ["train/a/link.jpg", "train/linked/0.jpg"])
def test_a_symbolic_link_leading_out_of_the_image_root_is_refused_unless_allowed(tmp_path, monkeypatch, listed):
    from ltbench.data import build_data

    root, train_list, outside = _escaping_links(tmp_path)
    write_list(train_list, ["train/a/0.jpg 0", "train/b/inside.jpg 1", f"{listed} 1"])
    monkeypatch.delenv(sources.OUTSIDE_ROOT_ENV, raising=False)
    with pytest.raises(DataError) as err:
        build_data("places-lt", root, None).fingerprint
    assert str(err.value) == (f"image {root / listed} (listed at {train_list}:3) is a symbolic link (or in a linked "
                              f"folder) that leads to {outside / '0.jpg'}, outside the image root {root}; fix the link "
                              f"or the list, or set LTBENCH_ALLOW_OUTSIDE_ROOT=1 to follow such paths")
    monkeypatch.setenv(sources.OUTSIDE_ROOT_ENV, "1")  # the user's explicit opt-in
    assert build_data("places-lt", root, None).fingerprint


def test_every_listed_image_is_checked_before_training_with_its_list_line(tmp_path):
    from ltbench.data import build_data

    lines = write_split_dataset(tmp_path, ["a", "b"], {"train": 3, "val": 1, "test": 2})
    for split in ("train", "val", "test"):
        write_list(tmp_path / f"Places_LT_{split}.txt", ["", *lines[split]])  # line 1 blank
    build_data("places-lt", tmp_path, None)
    (tmp_path / "train" / "b" / "2.jpg").unlink()  # listed on line 7 of the train list
    with pytest.raises(DataError, match=rf"^image {tmp_path / 'train/b/2.jpg'} \(listed at "
                                        rf"{tmp_path / 'Places_LT_train.txt'}:7\) does not exist"):
        build_data("places-lt", tmp_path, None).fingerprint
    write_image(tmp_path / "train" / "b" / "2.jpg", 1, 8)
    (tmp_path / "val" / "b" / "0.jpg").unlink()
    (tmp_path / "val" / "b" / "0.jpg").mkdir()
    with pytest.raises(DataError, match=r"val/b/0.jpg \(listed at .*Places_LT_val.txt:3\) is not a file"):
        build_data("places-lt", tmp_path, None).fingerprint
    (tmp_path / "val" / "b" / "0.jpg").rmdir()
    write_image(tmp_path / "val" / "b" / "0.jpg", 1, 8)
    (tmp_path / "test" / "b" / "1.jpg").unlink()  # the test set too, though no stage key covers it
    with pytest.raises(DataError, match=r"test/b/1.jpg \(listed at .*Places_LT_test.txt:5\) does not exist"):
        build_data("places-lt", tmp_path, None)


def test_an_image_that_cannot_be_decoded_is_one_line_naming_file_and_list_line(tmp_path):
    """Decoding happens in DataLoader workers: the error must come back as one line, not their traceback."""
    import torch

    from ltbench.data.loaders import FileLoader

    lines = write_split_dataset(tmp_path, ["a", "b"], {"train": 3, "val": 1, "test": 1})
    for split in ("train", "val", "test"):
        write_list(tmp_path / f"Places_LT_{split}.txt", lines[split])
    train = source("places-lt").load(tmp_path).train
    (tmp_path / "train" / "a" / "1.jpg").write_bytes(b"")  # a zero-byte file: it exists, stat is happy
    (tmp_path / "train" / "b" / "2.jpg").write_bytes((tmp_path / "train" / "b" / "0.jpg").read_bytes()[:40])
    for workers in (2, 0):
        loader = FileLoader(train, 2, (0.5,) * 3, (0.5,) * 3, 8, torch.device("cpu"), workers=workers)
        with pytest.raises(DataError) as err:
            for _ in loader.batches(2):
                pass
        message = str(err.value)
        assert "\n" not in message and "Traceback" not in message and "worker" not in message, message
        assert message.startswith(f"cannot decode image {tmp_path / 'train/a/1.jpg'}, listed at "
                                  f"{tmp_path / 'Places_LT_train.txt'}:2 (UnidentifiedImageError")


def test_a_listed_decompression_bomb_is_one_line_naming_file_list_line_and_limit(tmp_path):
    """Split-list images are decoded in DataLoader workers during training: a bomb is refused there, before
    decoding, as one line naming the image, its list line and the limit."""
    import torch

    from ltbench.data.loaders import FileLoader

    lines = write_split_dataset(tmp_path, ["a", "b"], {"train": 3, "val": 1, "test": 1})
    for split in ("train", "val", "test"):
        write_list(tmp_path / f"Places_LT_{split}.txt", lines[split])
    train = source("places-lt").load(tmp_path).train
    (tmp_path / "train" / "b" / "1.jpg").write_bytes(png_header(30000, 30000))  # a PNG under a .jpg name: Pillow
    for workers in (1, 0):                                                        # goes by content
        loader = FileLoader(train, 2, (0.5,) * 3, (0.5,) * 3, 8, torch.device("cpu"), workers=workers)
        with pytest.raises(DataError) as err:
            for _ in loader.batches(2):
                pass
        assert str(err.value) == (f"image {tmp_path / 'train/b/1.jpg'}, listed at {tmp_path / 'Places_LT_train.txt'}:5 "
                                  f"claims 900,000,000 pixels, over the limit of 89,478,485 pixels (Pillow's "
                                  f"MAX_IMAGE_PIXELS): a decompression bomb or a mistaken file; replace it with the "
                                  f"real image or remove its line, then start the run again")


def test_a_gzip_split_list_without_newlines_is_refused_by_line_length(tmp_path):
    """A .txt.gz of 16 MiB without a newline (a gzip bomb): read a line at a time with a bound, never whole."""
    import gzip

    bad = tmp_path / "Places_LT_train.txt.gz"
    with gzip.open(bad, "wb") as f:
        f.write(b"train/" + b"a" * (16 * 2**20))
    with pytest.raises(DataError, match=rf"^{bad}:1: line longer than 4,160 bytes \(a path is at most 4,096\)"):
        sources.read_split_list(bad)


def splits_file(shared_data: Path, name: str) -> Path:
    path = shared_data / "splits" / name
    if not path.is_file():
        pytest.skip(f"{path} not found")
    return path


def test_places_lt_real_train_list(shared_data):
    paths, labels = sources.read_split_list(splits_file(shared_data, "Places_LT_train.txt.gz"))
    counts = np.bincount(labels)
    assert len(paths) == 62500 and len(counts) == 365 and counts.max() == 4980 and counts.min() == 5
    assert group_sizes(counts) == {"many": 131, "medium": 163, "few": 71}
    # lists found in <root>/splits, images absent: the error names the first image it looked for
    with pytest.raises(DataError, match="lists found but not the images"):
        source("places-lt").load(shared_data)


@pytest.mark.parametrize("name, lines", [("ImageNet_LT_val.txt.gz", 20000), ("ImageNet_LT_test.txt.gz", 50000),
                                         ("Places_LT_val.txt.gz", 7300), ("Places_LT_test.txt.gz", 36500)])
def test_real_val_test_list_sizes(shared_data, name, lines):
    paths, labels = sources.read_split_list(splits_file(shared_data, name))
    assert len(paths) == lines and len(np.unique(labels)) == (1000 if "ImageNet" in name else 365)


# --- missing data -------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["mnist-lt", "fashion-mnist-lt", "cifar10-lt", "cifar100-lt", "imagenet-lt",
                                  "places-lt", "inat18"])
def test_missing_dataset_error_names_root_and_layouts(tmp_path, name):
    root = tmp_path / "data"
    src = source(name)
    assert src.find(root) is None
    with pytest.raises(DataError) as err:
        src.load(root)
    message = str(err.value)
    assert message.startswith(f"dataset '{name}' not found under {root}") and "\n" not in message
    assert src.how_to_get() in message and "--data-root" in message


def test_missing_cifar100_message():
    with pytest.raises(DataError) as err:
        source("cifar100-lt").load(Path("/x/data"))
    assert str(err.value) == (
        "dataset 'cifar100-lt' not found under /x/data: expected cifar-100-python/ (torchvision layout) or "
        "cifar100/{train,test}/<class>/ (image folders); pass --data-root DIR, or --download to fetch it "
        "with torchvision")


def test_in_memory_sources_ignore_root():
    for name in ("digits-lt", "synthetic"):
        assert isinstance(source(name).load(Path("/nonexistent")).train, ArraySplit)


def test_fast_path_feeds_the_images_of_the_reference_dataloader_path(tmp_path):
    """The on-device uint8 path (decoded once from an image folder) and the anchors' path (torchvision
    ImageFolder + ToTensor + Normalize through a DataLoader with workers) give the model the same images
    for the same indices, before random augmentation; also along a sampler stream (class-balanced)."""
    import torch
    from torchvision import datasets, transforms

    from ltbench.data.base import Augment
    from ltbench.data.loaders import TensorLoader

    rng = np.random.default_rng(0)
    for split, per_class in (("train", 5), ("test", 1)):
        for label, name in enumerate(CIFAR10_CLASSES):
            (tmp_path / split / name).mkdir(parents=True)
            for i in range(per_class + label % 3):  # unequal classes
                pixels = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(tmp_path / split / name / f"{i}.png")
    src = source("cifar10-lt")
    train = src.load(tmp_path).train
    fast = TensorLoader(train, 10, src.mean, src.std, Augment(0, False), torch.device("cpu"))
    reference = datasets.ImageFolder(str(tmp_path / "train"), transforms.Compose(
        [transforms.ToTensor(), transforms.Normalize(src.mean, src.std)]))
    assert len(reference) == len(fast) == sum(5 + label % 3 for label in range(10))
    loader = torch.utils.data.DataLoader(reference, batch_size=16, shuffle=False, num_workers=2)
    expected = torch.cat([x for x, _ in loader])
    labels = torch.cat([y for _, y in loader])
    seen = 0
    for batch in fast.batches(16):
        assert torch.allclose(batch["x"], expected[batch["idx"]], atol=1e-5)
        assert torch.equal(batch["y"], labels[batch["idx"]])
        seen += len(batch["idx"])
    assert seen == len(reference)
    for batch in fast.epoch("class-balanced", torch.Generator().manual_seed(0), 16):
        assert torch.allclose(batch["x"], expected[batch["idx"]], atol=1e-5)
        assert torch.equal(batch["y"], labels[batch["idx"]])
