"""Datasets: built-in photos and digits, imagefolder, CIFAR pickles and the restricted unpickler."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from fixtures import (
    make_cifar10,
    make_cifar100,
    make_imagefolder,
    make_malicious_pickle,
)

from eqbench.data import DATASETS, ImageDataset, load_dataset, safe_pickle
from eqbench.data.base import _head_plan, parallel_rows, resize_box, resize_square, unit_float
from eqbench.data.photos import PHOTO_NAMES, TEST_PHOTOS, available_photos, load_photo
from eqbench.errors import DatasetError

# ---------------------------------------------------------------------------------------------
# registry


def test_every_dataset_is_described() -> None:
    assert set(DATASETS.names()) >= {"photos", "digits", "imagefolder", "cifar10", "cifar100"}
    descriptions = [DATASETS.describe(name) for name in DATASETS.names()]
    assert all(text and "\n" not in text for text in descriptions)
    # registered with its own line, not the factory's docstring
    assert all(not text.startswith("Factory of") for text in descriptions)


def test_empty_dataset_is_an_error() -> None:
    with pytest.raises(DatasetError, match="no images in its train split"):
        load_dataset("photos", "train", n=0)


def test_builtins_refuse_a_path() -> None:
    for name in ("photos", "digits"):
        with pytest.raises(DatasetError, match=f"--dataset {name}"):
            load_dataset(f"{name}:/somewhere", "train")


# ---------------------------------------------------------------------------------------------
# photos


def test_at_least_twenty_photos_load_offline() -> None:
    names = available_photos()
    assert len(names) >= 20
    for name in names:
        photo = load_photo(name)
        assert photo.dtype == np.uint8 and photo.ndim == 3 and photo.shape[2] == 3
        assert min(photo.shape[:2]) >= 150
        assert photo.std() > 5  # a real picture, not a blank
    assert set(TEST_PHOTOS) <= set(PHOTO_NAMES)
    # Grey sources are replicated to RGB; colour sources are not grey.
    assert np.array_equal(load_photo("camera")[..., 0], load_photo("camera")[..., 2])
    assert not np.array_equal(load_photo("astronaut")[..., 0], load_photo("astronaut")[..., 2])


def test_photo_splits_share_no_source() -> None:
    train = load_dataset("photos", "train", n=300, seed=0)
    test = load_dataset("photos", "test", n=100, seed=0)
    assert not set(train.groups.tolist()) & set(test.groups.tolist())
    assert {PHOTO_NAMES[g] for g in test.groups} <= set(TEST_PHOTOS)
    assert len(set(train.groups.tolist())) >= 10  # many train photos are used
    assert np.array_equal(train.labels, train.groups)
    assert train.classes == list(PHOTO_NAMES)
    assert train.labels.max() < len(train.classes)


def test_photo_crops_are_seeded() -> None:
    a = load_dataset("photos", "train", n=20, seed=3)
    b = load_dataset("photos", "train", n=20, seed=3)
    c = load_dataset("photos", "train", n=20, seed=4)
    big = load_dataset("photos", "train", n=40, seed=3)
    xa, xb, xc = (ds.load(range(20), 32) for ds in (a, b, c))
    assert torch.equal(xa, xb)
    assert not torch.equal(xa, xc)
    assert torch.equal(big.load(range(20), 32), xa)  # crop i does not depend on n
    assert a.digest() == b.digest() != c.digest()
    assert torch.equal(a.load([5, 2], 32), xa[[5, 2]])  # per index, whatever the batch
    assert torch.equal(a.load((5, 2), 32), xa[[5, 2]])  # any sequence of indices


def test_photo_crop_shape_and_scale() -> None:
    ds = load_dataset("photos", "test", n=50, seed=1)
    x = ds.load([0, 1, 2], 48)
    assert x.shape == (3, 3, 48, 48) and x.dtype == torch.uint8
    boxes = ds.boxes  # type: ignore[attr-defined]
    for label, (top, left, side) in zip(ds.labels, boxes, strict=True):
        h, w = load_photo(PHOTO_NAMES[label]).shape[:2]
        assert 0.3 * min(h, w) - 1 <= side <= 0.8 * min(h, w)
        assert 0 <= top <= h - side and 0 <= left <= w - side


def test_photo_crops_are_the_resized_boxes_whatever_the_threads() -> None:
    ds = load_dataset("photos", "train", n=70, seed=2)
    boxes = ds.boxes  # type: ignore[attr-defined]
    crops = [
        torch.tensor(load_photo(PHOTO_NAMES[label])[top : top + side, left : left + side])
        for label, (top, left, side) in zip(ds.labels, boxes, strict=True)
    ]
    expected = torch.cat(
        [
            torch.nn.functional.interpolate(
                crop.permute(2, 0, 1)[None].float(),
                size=(40, 40),
                mode="bilinear",
                antialias=True,
                align_corners=False,
            )
            for crop in crops
        ]
    )
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        inline = ds.load(range(70), 40)
        torch.set_num_threads(3)  # 3 threads of rows: 0, 3, 6, ... / 1, 4, ... / 2, 5, ...
        shared = ds.load(range(70), 40)
        with torch.inference_mode():  # as the feature store calls it
            assert torch.equal(ds.load(range(70), 40), shared)
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(inline, shared)
    assert (inline.float() - expected).abs().max() <= 1.0


def test_parallel_rows_covers_each_row_once_and_raises() -> None:
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(4)
        seen = torch.zeros(100, dtype=torch.int64)

        def fill(rows: range) -> None:
            for row in rows:
                seen[row] += 1

        parallel_rows(fill, 100)
        assert torch.equal(seen, torch.ones(100, dtype=torch.int64))

        def broken(rows: range) -> None:
            if 7 in rows:
                raise ValueError("row 7")

        with pytest.raises(ValueError, match="row 7"):
            parallel_rows(broken, 100)
    finally:
        torch.set_num_threads(threads)


def test_unit_float_is_compact_whatever_the_layout() -> None:
    images = torch.randint(0, 256, (2, 3, 5, 5), dtype=torch.uint8)
    for layout in (images, images.contiguous(memory_format=torch.channels_last)):
        x = unit_float(layout[..., 1:4, 1:4])
        assert x.is_contiguous() and x.dtype == torch.float32
        assert torch.equal(x, images[..., 1:4, 1:4].float() / 255.0)


def test_photo_sizes_show_the_same_content() -> None:
    ds = load_dataset("photos", "train", n=8, seed=0)
    small = ds.load(range(8), 32).float()
    large = ds.load(range(8), 96)
    down = resize_square(large, 32).float()
    assert (down - small).abs().mean() < 4
    # ...and different crops differ by much more.
    assert (down - small.roll(1, dims=0)).abs().mean() > 10


# ---------------------------------------------------------------------------------------------
# digits


def test_digits_split() -> None:
    train = load_dataset("digits", "train")
    test = load_dataset("digits", "test")
    assert len(train) + len(test) == 1797
    assert len(test) == 540
    assert train.classes == [str(d) for d in range(10)]
    assert not set(train.groups.tolist()) & set(test.groups.tolist())
    # Stratified: every class keeps about 30% of its images in the test split.
    for digit in range(10):
        n_train = int((train.labels == digit).sum())
        n_test = int((test.labels == digit).sum())
        assert abs(n_test / (n_train + n_test) - 0.3) < 0.02


def test_digits_pixels() -> None:
    from sklearn.datasets import load_digits

    ds = load_dataset("digits", "test")
    source = load_digits().images[int(ds.groups[0])]
    x = ds.load([0], 8)
    assert x.shape == (1, 3, 8, 8) and x.dtype == torch.uint8
    assert torch.equal(x[0, 0], torch.from_numpy(np.rint(source * 255 / 16).astype(np.uint8)))
    assert torch.equal(x[0, 0], x[0, 2])
    assert ds.load([0, 3], 64).shape == (2, 3, 64, 64)
    assert int(ds.labels[0]) == int(load_digits().target[int(ds.groups[0])])


# ---------------------------------------------------------------------------------------------
# imagefolder


def test_imagefolder_reads_the_layout(tmp_path: Path) -> None:
    root = make_imagefolder(tmp_path / "imgs", classes=3, per_class=4, size=40)
    train = load_dataset(f"imagefolder:{root}", "train")
    test = load_dataset(f"imagefolder:{root}", "test")
    assert len(train) == 12 and len(test) == 12
    assert train.classes == ["class_0", "class_1", "class_2"]
    assert np.bincount(train.labels).tolist() == [4, 4, 4]
    x = train.load(range(len(train)), 24)
    assert x.shape == (12, 3, 24, 24) and x.dtype == torch.uint8
    # Each image's mean colour is its class colour (the fixture's noise averages out).
    for image, label in zip(x, train.labels, strict=True):
        mean = image.float().mean(dim=(1, 2))
        expected = torch.tensor([(70 * label) % 256, 255 - (50 * label) % 256, 128.0])
        assert (mean - expected).abs().max() < 12
    # Decoded over threads (40 files, 3 threads), the images are the same as one by one.
    many = load_dataset(f"imagefolder:{make_imagefolder(tmp_path / 'many', 2, 20)}", "train")
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        inline = many.load(range(40), 24)
        torch.set_num_threads(3)
        assert torch.equal(many.load(range(40), 24), inline)
    finally:
        torch.set_num_threads(threads)
    # The subset option keeps a seeded subset.
    sub = load_dataset(f"imagefolder:{root}", "train", n=5, seed=1)
    assert len(sub) == 5 and sub.digest() != train.digest()
    assert sub.digest() == load_dataset(f"imagefolder:{root}", "train", n=5, seed=1).digest()


def test_imagefolder_resizes_shorter_side_and_centre_crops(tmp_path: Path) -> None:
    root = make_imagefolder(tmp_path / "imgs", classes=1, per_class=1, size=40)
    png = root / "train" / "class_0" / "img_0.png"
    pixels = np.zeros((40, 60, 3), dtype=np.uint8)
    pixels[:, :10] = 255  # a white band on the left, outside the centre crop
    from PIL import Image

    Image.fromarray(pixels).save(png)
    ds = load_dataset(f"imagefolder:{root}", "train")
    assert ds.load([0], 40).max() == 0
    pixels[:, 30] = 255  # a white column in the centre, inside it
    Image.fromarray(pixels).save(png)
    assert ds.load([0], 40)[0, :, :, 20].min() == 255


def test_imagefolder_errors(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match=r"does not exist.*imagefolder:PATH"):
        load_dataset(f"imagefolder:{tmp_path / 'nope'}", "train")
    with pytest.raises(DatasetError, match="needs a path"):
        load_dataset("imagefolder", "train")

    root = make_imagefolder(tmp_path / "a", classes=2, per_class=2)
    (root / "val").rename(root / "test")
    assert len(load_dataset(f"imagefolder:{root}", "test")) == 4  # test/ replaces val/
    (root / "test").rename(root / "elsewhere")
    with pytest.raises(DatasetError, match="neither val/ nor test/"):
        load_dataset(f"imagefolder:{root}", "test")
    assert len(load_dataset(f"imagefolder:{root}", "train")) == 4  # train needs no val/
    (root / "elsewhere").rename(root / "test")

    (root / "test" / "class_9").mkdir()
    (root / "test" / "class_9" / "x.png").write_bytes(b"")
    with pytest.raises(DatasetError, match=r"class_9.*no counterpart"):
        load_dataset(f"imagefolder:{root}", "test")

    empty = make_imagefolder(tmp_path / "b", classes=2, per_class=2)
    (empty / "train" / "class_2").mkdir()
    (empty / "train" / "class_2" / "notes.txt").write_text("not an image")
    with pytest.raises(DatasetError, match="class_2' holds no images"):
        load_dataset(f"imagefolder:{empty}", "train")

    no_train = tmp_path / "c"
    (no_train / "val" / "x").mkdir(parents=True)
    with pytest.raises(DatasetError, match="no train/ folder"):
        load_dataset(f"imagefolder:{no_train}", "train")


def test_imagefolder_corrupt_image(tmp_path: Path) -> None:
    root = make_imagefolder(tmp_path / "imgs", classes=2, per_class=2)
    bad = root / "train" / "class_1" / "img_1.jpg"
    bad.write_bytes(b"\x00garbage, not a JPEG" * 10)
    ds = load_dataset(f"imagefolder:{root}", "train")
    assert ds.load([0], 16).shape == (1, 3, 16, 16)  # good files still load
    index = ds.files.index("class_1/img_1.jpg")  # type: ignore[attr-defined]
    with pytest.raises(DatasetError, match=r"img_1\.jpg.*replace or delete"):
        ds.load([index], 16)


# ---------------------------------------------------------------------------------------------
# CIFAR


def _chw(rows: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(rows.reshape(-1, 3, 32, 32))


def test_cifar10_reads_real_format(tmp_path: Path) -> None:
    fx = make_cifar10(tmp_path, n_train_per_batch=6, n_test=6)
    for path in (tmp_path, fx.folder):  # parent or the folder itself
        train = load_dataset(f"cifar10:{path}", "train")
        test = load_dataset(f"cifar10:{path}", "test")
        assert len(train) == 30 and len(test) == 6
        assert train.classes == fx.label_names
        assert train.labels.tolist() == fx.train_labels
        assert test.labels.tolist() == fx.test_labels
    x = train.load(range(30), 32)
    assert torch.equal(x, _chw(fx.train_data))
    # Pixel (channel 1, row 5, column 7) of image 13 is data row 13, entry 1024 + 5*32 + 7.
    assert int(x[13, 1, 5, 7]) == int(fx.train_data[13, 1024 + 5 * 32 + 7])
    assert test.load([2], 64).shape == (1, 3, 64, 64)


def test_cifar10_matches_torchvision(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import torchvision.datasets.cifar as tv_cifar

    fx = make_cifar10(tmp_path, n_train_per_batch=4, n_test=5)
    # The fixture is not the official file, so skip torchvision's md5 checks (nothing downloads).
    monkeypatch.setattr(tv_cifar, "check_integrity", lambda *a, **k: True)
    for split, train in (("train", True), ("test", False)):
        oracle = tv_cifar.CIFAR10(str(tmp_path), train=train, download=False)
        ours = load_dataset(f"cifar10:{fx.folder}", split)
        assert oracle.classes == ours.classes
        assert list(oracle.targets) == ours.labels.tolist()
        expected = torch.from_numpy(oracle.data).permute(0, 3, 1, 2)
        assert torch.equal(ours.load(range(len(ours)), 32), expected)


def test_cifar100_reads_real_format(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import torchvision.datasets.cifar as tv_cifar

    fx = make_cifar100(tmp_path, n_train=12, n_test=6)
    train = load_dataset(f"cifar100:{tmp_path}", "train")
    test = load_dataset(f"cifar100:{tmp_path}", "test")
    assert len(train.classes) == 100 and train.classes[7] == "fine_07"
    assert train.labels.tolist() == fx.train_labels
    assert test.labels.tolist() == fx.test_labels
    assert torch.equal(test.load(range(6), 32), _chw(fx.test_data))
    assert int(train.load([4], 32)[0, 2, 31, 0]) == int(fx.train_data[4, 2048 + 31 * 32])
    monkeypatch.setattr(tv_cifar, "check_integrity", lambda *a, **k: True)
    oracle = tv_cifar.CIFAR100(str(tmp_path), train=True, download=False)
    assert list(oracle.targets) == train.labels.tolist()
    assert torch.equal(torch.from_numpy(oracle.data).permute(0, 3, 1, 2), _chw(fx.train_data))


def test_cifar_errors(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="does not exist"):
        load_dataset(f"cifar10:{tmp_path / 'nope'}", "train")
    with pytest.raises(DatasetError, match="cifar-10-batches-py"):
        load_dataset(f"cifar10:{tmp_path}", "train")
    with pytest.raises(DatasetError, match="needs a path"):
        load_dataset("cifar100", "train")
    fx = make_cifar10(tmp_path)
    (fx.folder / "data_batch_3").unlink()
    with pytest.raises(DatasetError, match="data_batch_3' is missing"):
        load_dataset(f"cifar10:{tmp_path}", "train")
    (fx.folder / "test_batch").write_bytes(b"\x80\x02}q\x01(U\x04data")  # truncated
    with pytest.raises(DatasetError, match="truncated or corrupt"):
        load_dataset(f"cifar10:{tmp_path}", "test")


def test_cifar_refuses_code(tmp_path: Path) -> None:
    fx = make_cifar10(tmp_path)
    sentinel = tmp_path / "payload-ran"
    make_malicious_pickle(fx.folder / "data_batch_1", sentinel)
    assert b"system" in (fx.folder / "data_batch_1").read_bytes()
    with pytest.raises(DatasetError, match=r"refusing to unpickle (posix|os|nt)\.system") as err:
        load_dataset(f"cifar10:{tmp_path}", "train")
    assert "this file may carry code" in str(err.value)
    assert "data_batch_1" in str(err.value)
    assert not sentinel.exists()
    with pytest.raises(DatasetError, match="refusing"):
        safe_pickle.load(fx.folder / "data_batch_1")
    assert not sentinel.exists()


def test_safe_pickle_allows_plain_data(tmp_path: Path) -> None:
    obj: dict[Any, Any] = {
        b"data": np.arange(12, dtype=np.uint8).reshape(3, 4),
        "f": np.float32(1.5),
        "s": {1, 2},
        "l": [1, "a", (2.0, None)],
    }
    for protocol in (2, 4, 5):
        path = tmp_path / f"p{protocol}.pkl"
        path.write_bytes(pickle.dumps(obj, protocol=protocol))
        back = safe_pickle.load(path)
        assert np.array_equal(back[b"data"], obj[b"data"])
        assert back["f"] == np.float32(1.5) and back["s"] == {1, 2}
        assert back["l"] == [1, "a", (2.0, None)]
    other = tmp_path / "other.pkl"
    other.write_bytes(pickle.dumps(Path("/x"), protocol=2))
    with pytest.raises(DatasetError, match=r"refusing to unpickle pathlib\.PosixPath"):
        safe_pickle.load(other)


def test_datasets_are_image_datasets(tmp_path: Path) -> None:
    make_cifar100(tmp_path)
    for spec in ("digits", f"cifar100:{tmp_path}"):
        ds = load_dataset(spec, "test")
        assert isinstance(ds, ImageDataset)
        assert len(ds.groups) == len(ds.labels) == len(ds)
        assert ds.labels.dtype == np.int64 and ds.groups.dtype == np.int64
        assert isinstance(ds.digest(), str) and len(ds.digest()) == 16


@pytest.mark.parametrize("side", [7, 40, 301])
def test_uint8_resizing_is_within_one_grey_level_of_float(side: int) -> None:
    gen = torch.Generator().manual_seed(side)
    images = torch.randint(0, 256, (3, 3, side, side), generator=gen, dtype=torch.uint8)
    fast = resize_square(images, 64)
    reference = torch.nn.functional.interpolate(
        images.float(), size=(64, 64), mode="bilinear", antialias=True, align_corners=False
    )
    assert fast.dtype == torch.uint8 and fast.shape == (3, 3, 64, 64)
    assert (fast.float() - reference).abs().max() <= 1.0
    # a crop view of a channels-last photo (how the built-in photos are cut) resizes the same
    photo = images.permute(0, 2, 3, 1).contiguous()[0]  # (H, W, 3)
    view = photo[1:, 2:].permute(2, 0, 1)[None]
    assert torch.equal(resize_square(view, 64), resize_square(view.contiguous(), 64))
    # written into a given buffer, in either layout, the values are the same
    for layout in (torch.contiguous_format, torch.channels_last):
        out = torch.empty((1, 3, 64, 64), dtype=torch.uint8).contiguous(memory_format=layout)
        assert resize_square(view, 64, out=out) is out
        assert torch.equal(out, resize_square(view, 64))
    floats = torch.empty((3, 3, 64, 64))
    resize_square(images.float(), 64, out=floats)
    assert torch.equal(floats, resize_square(images.float(), 64))


def test_resize_square_out_must_fit() -> None:
    with pytest.raises(ValueError, match="expected"):
        resize_square(
            torch.zeros((2, 3, 10, 10), dtype=torch.uint8), 8, out=torch.empty(2, 3, 9, 9)
        )
    same = torch.randint(0, 256, (2, 3, 8, 8), dtype=torch.uint8)
    out = torch.empty((2, 3, 8, 8), dtype=torch.uint8)
    assert torch.equal(resize_square(same, 8, out=out), same)


@pytest.mark.parametrize(("size", "stop"), [(128, 96), (128, 128), (64, 48), (100, 75)])
def test_resize_box_is_the_head_of_the_full_resize_for_every_side(size: int, stop: int) -> None:
    """Computing only the head of a resize (fewer source pixels, explicit scale) changes no
    value, for every source side from upscaling to 5x downscaling; both the shortcut and the
    fallback of :func:`_head_plan` are exercised."""
    rng = np.random.default_rng(size + stop)
    sides = range(8, 5 * size, 2)
    planned = 0
    for side in sides:
        photo = rng.integers(0, 256, (side + 9, side + 4, 3), dtype=np.uint8)
        box = torch.from_numpy(photo[5 : 5 + side, 2 : 2 + side].copy()).permute(2, 0, 1)[None]
        expected = resize_square(box, size)[..., :stop, :stop]
        out = torch.empty((1, stop, stop, 3), dtype=torch.uint8).permute(0, 3, 1, 2)
        resize_box(photo, 5, 2, side, size, out)
        assert torch.equal(out, expected), side
        planned += _head_plan(side, size, stop) is not None
    if stop < size:  # most sides take the shortcut, some fall back (no exact scale argument)
        assert 0.8 * len(sides) < planned < len(sides)
    else:
        assert planned == 0


def test_load_window_is_the_centre_of_load() -> None:
    photos = load_dataset("photos", "train", n=80, seed=4)
    full = photos.load(range(80), 128)
    threads = torch.get_num_threads()
    try:
        for n_threads in (1, 3):
            torch.set_num_threads(n_threads)
            assert torch.equal(photos.load_window(range(80), 128, 64), full[..., 32:96, 32:96])
        with torch.inference_mode():  # as the feature store calls it
            assert torch.equal(photos.load_window(range(80), 128, 64), full[..., 32:96, 32:96])
    finally:
        torch.set_num_threads(threads)
    digits = load_dataset("digits", "test")  # the generic form: load, then cut
    centre = digits.load([0, 5], 40)[..., 10:30, 10:30]
    assert torch.equal(digits.load_window([0, 5], 40, 20), centre)
