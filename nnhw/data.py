"""MNIST through torchvision, split as the homework splits it, held on the device.

train = the first 50,000 official training images, dev = the last 10,000,
test = the official 10,000 (or train+dev = all 60,000 for the extra credit).
Each split is one float tensor (N, 784) on the device; the training loop slices
batches out of a fresh permutation each epoch, so there is no DataLoader.
"""

import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import torch

from .command import NnhwError

N_TRAIN_DEV = 60000  # MNIST's official training set: the homework's train and dev splits together
FILES = {
    "train-images-idx3-ubyte": (2051, N_TRAIN_DEV),
    "train-labels-idx1-ubyte": (2049, N_TRAIN_DEV),
    "t10k-images-idx3-ubyte": (2051, 10000),
    "t10k-labels-idx1-ubyte": (2049, 10000),
}
IMAGE_SIDE = 28  # every MNIST image is IMAGE_SIDE x IMAGE_SIDE pixels
N_PIXELS = IMAGE_SIDE * IMAGE_SIDE  # 784, the input dimension d
N_CLASSES = 10  # k, the digits 0..9
N_TRAIN = 50000  # the homework's train split; one "effective epoch" is this many points
PIXEL_MEAN, PIXEL_STD = 0.1307, 0.3081


def effective_epochs(points):
    """Training points touched / 50,000: the homework's x-axis, the same for every batch size and split."""
    return points / N_TRAIN


def passes(points, n_train):
    """Training points touched / the training split's size: what train.epochs counts."""
    return points / n_train


class DataError(NnhwError, RuntimeError):
    """MNIST cannot be read; the message is one line that says what to do."""


@dataclass
class Split:
    x: torch.Tensor  # (N, N_PIXELS) float32 on the device
    y: torch.Tensor  # (N,) int64 on the device

    def __len__(self):
        return len(self.y)


def resolve_root(root):
    """NNHW_DATA_ROOT, when set and not empty, overrides the config's data.root."""
    return Path(os.environ.get("NNHW_DATA_ROOT") or root)


def _fix_hint(raw, download=False):
    return (
        f"put the four MNIST files ({', '.join(FILES)}) in {raw}, "
        "or set NNHW_DATA_ROOT to a folder whose MNIST/raw/ holds them"
        + ("" if download else ", or set data.download = true")
    )


def _first_and_cause(e):
    """An exception's first line and, when it spans several, its last (usually the cause)."""
    lines = [line.strip() for line in str(e).strip().splitlines() if line.strip()] or [type(e).__name__]
    return lines[0] if len(lines) == 1 else f"{lines[0]} ... {lines[-1]}"


def check_raw_files(raw, download=False):
    """Every file present and readable, with the right magic number, count and size; labels in 0..9."""
    missing = [name for name in FILES if not (raw / name).is_file()]
    if missing:
        what = "no MNIST files" if len(missing) == len(FILES) else f"missing {', '.join(missing)}"
        raise DataError(f"{what} in {raw}: {_fix_hint(raw, download)}")
    for name, (magic, count) in FILES.items():
        path = raw / name
        try:
            with open(path, "rb") as f:
                header = f.read(16 if magic == 2051 else 8)
        except OSError as e:
            raise DataError(f"cannot read {path}: {(e.strerror or str(e)).lower()}; make it readable (chmod a+r) or replace it") from None
        size = path.stat().st_size
        if len(header) < 8 or int.from_bytes(header[:4], "big") != magic:
            found = int.from_bytes(header[:4], "big") if len(header) >= 4 else None
            raise DataError(f"{path}: wrong magic number {found} (expected {magic}); the file is not MNIST or is corrupt: replace it")
        n = int.from_bytes(header[4:8], "big")
        expected = 16 + n * N_PIXELS if magic == 2051 else 8 + n
        if n != count or size != expected:
            raise DataError(
                f"{path}: truncated or corrupt ({size} bytes for {n} items, expected {16 + count * N_PIXELS if magic == 2051 else 8 + count}); replace the file"
            )
        if magic == 2049:
            labels = path.read_bytes()[8:]
            if max(labels) > 9:
                raise DataError(f"{path}: labels must lie in 0..9, found {max(labels)}; replace the file")


def _download(root):
    import torchvision

    try:
        for train in (True, False):
            torchvision.datasets.MNIST(root=str(root), train=train, download=True)
    except Exception as e:  # network, disk or mirror failures all end the same way
        raw = root / "MNIST" / "raw"
        raise DataError(f"could not download MNIST into {raw} ({_first_and_cause(e)}); {_fix_hint(raw, download=True)}") from None


def load_mnist(root, download=False):
    """The 60,000 training and 10,000 test images as uint8 (N, IMAGE_SIDE, IMAGE_SIDE) and int64 labels."""
    import torchvision

    root = Path(root)
    raw = root / "MNIST" / "raw"
    if download and not all((raw / name).is_file() for name in FILES):
        _download(root)
    check_raw_files(raw, download)
    sets = []
    for train in (True, False):
        try:
            ds = torchvision.datasets.MNIST(root=str(root), train=train, download=False)
        except Exception as e:
            raise DataError(f"torchvision could not read MNIST in {raw} ({_first_and_cause(e)}); replace the files") from None
        sets.append((ds.data, ds.targets))
    return sets


def bagged(split, fraction, seed):
    """A random `fraction` of the split's points, drawn without replacement by a generator of its own seeded
    with `seed` (the run's other random draws are the same with and without it), kept in the split's order."""
    n = round(fraction * len(split))
    keep = torch.randperm(len(split), generator=torch.Generator().manual_seed(seed))[:n].sort().values.to(split.y.device)
    return Split(split.x[keep], split.y[keep])


def load_splits(root, download=False, train_split="train", standardize=False, device="cpu", train_points=0, bag=1.0, seed=0):
    """{'train', 'dev', 'test'} -> Split on `device`; with train+dev, 'dev' is absent. train_points > 0
    keeps the first that many points of the training split (data.train_points); bag < 1 then keeps a
    random fraction of those, drawn from `seed` (data.bag)."""
    (xtr, ytr), (xte, yte) = load_mnist(root, download)

    def to_split(x, y):
        x = x.reshape(len(x), N_PIXELS).to(device=device, dtype=torch.float32).div_(255.0)  # in place: no second copy
        if standardize:
            x.sub_(PIXEL_MEAN).div_(PIXEL_STD)
        return Split(x, y.to(device=device, dtype=torch.int64))

    n = min(train_points or len(xtr), len(xtr) if train_split == "train+dev" else N_TRAIN)
    train = to_split(xtr[:n], ytr[:n])
    if bag < 1:
        train = bagged(train, bag, seed)
    if train_split == "train+dev":
        return {"train": train, "test": to_split(xte, yte)}
    return {"train": train, "dev": to_split(xtr[N_TRAIN:], ytr[N_TRAIN:]), "test": to_split(xte, yte)}


@lru_cache(maxsize=4)
def _cached_splits(root, train_split, standardize, device, train_points, bag, seed):
    return load_splits(Path(root), False, train_split, standardize, torch.device(device), train_points, bag, seed)


def splits_on_disk(cfg_data, device, seed=0):
    """A config's splits as the MNIST files on disk give them (never downloaded), for the run seed `seed`
    (which draws data.bag's points), loaded once per process and shared by its callers (nnhw.replay,
    nnhw.committee), which only read them."""
    d = cfg_data
    return _cached_splits(str(resolve_root(d.root)), d.train_split, d.standardize, str(device), d.train_points, d.bag, seed)
