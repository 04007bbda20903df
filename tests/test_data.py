import pytest
import torch

from nnhw import data
from nnhw.data import FILES, DataError


def fake_mnist(root, skip=(), truncate=None, bad_label=False):
    """Sparse files with valid headers and sizes: zeros for pixels and labels."""
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for name, (magic, count) in FILES.items():
        if name in skip:
            continue
        header = magic.to_bytes(4, "big") + count.to_bytes(4, "big")
        if magic == 2051:
            header += (28).to_bytes(4, "big") * 2
        size = len(header) + count * (784 if magic == 2051 else 1)
        with open(raw / name, "wb") as f:
            f.write(header)
            if bad_label and magic == 2049:
                f.write(bytes([10]))
            f.truncate(size - 100 if name == truncate else size)
    return raw


def test_missing_root_names_folder_and_files(tmp_path):
    with pytest.raises(DataError) as info:
        data.load_mnist(tmp_path / "nowhere")
    msg = str(info.value)
    assert "no MNIST files in" in msg and "nowhere/MNIST/raw" in msg
    assert all(name in msg for name in FILES) and "NNHW_DATA_ROOT" in msg and "\n" not in msg


def test_some_files_missing_are_named(tmp_path):
    fake_mnist(tmp_path, skip=("t10k-labels-idx1-ubyte",))
    with pytest.raises(DataError, match=r"missing t10k-labels-idx1-ubyte in"):
        data.load_mnist(tmp_path)


def test_truncated_file_is_named(tmp_path):
    fake_mnist(tmp_path, truncate="train-images-idx3-ubyte")
    with pytest.raises(DataError, match=r"train-images-idx3-ubyte: truncated or corrupt"):
        data.load_mnist(tmp_path)


def test_wrong_magic_is_named(tmp_path):
    raw = fake_mnist(tmp_path)
    p = raw / "t10k-images-idx3-ubyte"
    b = bytearray(p.read_bytes())
    b[:4] = (1234).to_bytes(4, "big")
    p.write_bytes(bytes(b))
    with pytest.raises(DataError, match=r"t10k-images-idx3-ubyte: wrong magic number 1234 \(expected 2051\)"):
        data.load_mnist(tmp_path)


def test_label_out_of_range_is_named(tmp_path):
    fake_mnist(tmp_path, bad_label=True)
    with pytest.raises(DataError, match=r"train-labels-idx1-ubyte: labels must lie in 0..9, found 10"):
        data.load_mnist(tmp_path)


def test_failed_download_says_what_to_do(tmp_path, monkeypatch):
    import torchvision

    def offline(self):
        raise RuntimeError("Error downloading train-images-idx3-ubyte.gz: <urlopen error [Errno -3] no network>")

    monkeypatch.setattr(torchvision.datasets.MNIST, "download", offline)
    with pytest.raises(DataError) as info:
        data.load_mnist(tmp_path, download=True)
    msg = str(info.value)
    assert msg.startswith("could not download MNIST into") and "NNHW_DATA_ROOT" in msg and "\n" not in msg


def test_env_overrides_root(monkeypatch):
    monkeypatch.setenv("NNHW_DATA_ROOT", "/some/where")
    assert str(data.resolve_root("data")) == "/some/where"
    monkeypatch.setenv("NNHW_DATA_ROOT", "")
    assert str(data.resolve_root("data")) == "data"


def test_real_splits(mnist_root):
    splits = data.load_splits(mnist_root)
    assert {k: len(v) for k, v in splits.items()} == {"train": 50000, "dev": 10000, "test": 10000}
    x = splits["train"].x
    assert x.shape == (50000, 784) and x.dtype == torch.float32
    assert 0.0 <= x.min().item() and x.max().item() <= 1.0
    # Label counts of the official test set, as published.
    assert torch.bincount(splits["test"].y).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    both = data.load_splits(mnist_root, train_split="train+dev", standardize=True)
    assert set(both) == {"train", "test"} and len(both["train"]) == 60000
    assert abs(both["train"].x.mean().item()) < 0.01 and abs(both["train"].x.std().item() - 1.0) < 0.01  # mean 0, std 1


def numbered_mnist(root):
    """MNIST files whose every image holds its own number in its first two pixels (low byte, high byte),
    plus 100 for the test files' images in the third: each image can be told from every other."""
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for name, (magic, count) in FILES.items():
        header = magic.to_bytes(4, "big") + count.to_bytes(4, "big")
        if magic == 2049:
            body = bytes(i % 10 for i in range(count))
        else:
            header += (28).to_bytes(4, "big") * 2
            images = torch.zeros(count, 784, dtype=torch.uint8)
            images[:, 0] = torch.arange(count) % 256
            images[:, 1] = torch.arange(count) // 256
            images[:, 2] = 100 if name.startswith("t10k") else 0
            body = images.numpy().tobytes()
        (raw / name).write_bytes(header + body)


def image_numbers(split):
    pixels = (split.x * 255).round().long()
    return (pixels[:, 0] + 256 * pixels[:, 1]).tolist(), set(pixels[:, 2].tolist())


def test_the_splits_are_the_homeworks_images(tmp_path):
    """train: the official training images 0-49,999; dev: 50,000-59,999, none of them a test image;
    test: the 10,000 official test images; train+dev: all 60,000, in order."""
    numbered_mnist(tmp_path)
    splits = data.load_splits(tmp_path)
    train, dev, test = (image_numbers(splits[s]) for s in ("train", "dev", "test"))
    assert train == (list(range(50000)), {0}) and dev == (list(range(50000, 60000)), {0})
    assert test == (list(range(10000)), {100})  # the test files' own images, and only those
    assert splits["dev"].y.tolist() == [i % 10 for i in range(50000, 60000)]
    merged = data.load_splits(tmp_path, train_split="train+dev")
    assert set(merged) == {"train", "test"} and image_numbers(merged["train"]) == (list(range(60000)), {0})
    assert image_numbers(data.load_splits(tmp_path, train_points=123)["train"])[0] == list(range(123))


def test_a_bag_is_a_subset_of_the_training_split_drawn_from_the_seed(tmp_path):
    """data.bag: each seed keeps its own fraction of the training split (in order, labels with their
    images), the same one every time; dev and test are untouched, and so is torch's global generator."""
    numbered_mnist(tmp_path)
    rng = torch.get_rng_state()
    bags = {seed: data.load_splits(tmp_path, bag=0.8, seed=seed) for seed in (0, 1)}
    assert torch.equal(torch.get_rng_state(), rng)
    whole = data.load_splits(tmp_path)
    kept = {}
    for seed, splits in bags.items():
        numbers, test_marks = image_numbers(splits["train"])
        assert len(numbers) == 40000 and numbers == sorted(set(numbers)) and set(numbers) <= set(range(50000))
        assert test_marks == {0} and splits["train"].y.tolist() == [i % 10 for i in numbers]
        assert torch.equal(splits["dev"].x, whole["dev"].x) and torch.equal(splits["test"].x, whole["test"].x)
        kept[seed] = set(numbers)
    assert image_numbers(data.load_splits(tmp_path, bag=0.8, seed=1)["train"])[0] == sorted(kept[1])
    assert 0.6 < len(kept[0] & kept[1]) / 50000 < 0.68  # two independent 80% draws share about 64%
    small = image_numbers(data.load_splits(tmp_path, train_split="train+dev", train_points=1000, bag=0.5, seed=3)["train"])[0]
    assert len(small) == 500 and set(small) <= set(range(1000))


def test_a_bagged_run_trains_on_its_bag_and_replays(tmp_path, mnist_root, monkeypatch):
    """A run with data.bag = 0.5 of 200 points makes a pass in 100 points, and replays as the same
    arithmetic: the replay draws the same bag from the run's seed, and another seed's bag parts from it."""
    from nnhw import replay
    from nnhw.checkpoint import load_checkpoint

    from conftest import finished_run

    real_bagged = data.bagged
    monkeypatch.setenv("NNHW_DATA_ROOT", str(mnist_root))
    run_dir = finished_run(tmp_path, ["data.train_points=200", "data.bag=0.5", "train.epochs=2", "train.batch_size=50",
                                      "eval.every=100", "eval.max_points=100"])
    assert load_checkpoint(run_dir)["points"] == 200  # two passes over 100 points
    data._cached_splits.cache_clear()
    assert replay.replay(run_dir)[0]
    data._cached_splits.cache_clear()
    monkeypatch.setattr(data, "bagged", lambda split, fraction, seed: real_bagged(split, fraction, seed + 1))
    same, what = replay.replay(run_dir)
    data._cached_splits.cache_clear()
    assert not same and "parted" in what
