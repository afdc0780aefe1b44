"""trainer.data: folders and .npz files become the uint8 crops the device sees, or a clear error."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from trainer_support import anomaly_images, normal_images, write_mvtec, write_pngs

from edge.errors import DataError, ImageError
from edge.preprocess import prepare_crop
from trainer.data import from_arrays, load_dataset, make_spec, parse_shape

SPEC = make_spec(16, 1)


def test_mvtec_folder_loads_every_split(trainer_mvtec_dir: Path) -> None:
    dataset = load_dataset(trainer_mvtec_dir, SPEC)
    assert dataset.train_normals.shape == (200, 16, 16, 1)
    assert dataset.test_normals.shape == (30, 16, 16, 1)
    assert dataset.test_anomalies.shape == (20, 16, 16, 1)
    assert dataset.train_normals.dtype == np.uint8
    assert dataset.summary["defects"] == {"defect": 20}
    assert any("resized to 16×16" in note for note in dataset.notes)


def test_folder_crops_match_the_edge_preprocessing(tmp_path: Path) -> None:
    images = normal_images(3, 23)
    write_pngs(tmp_path / "train" / "good", images)
    dataset = load_dataset(tmp_path, SPEC)
    for image, prepared in zip(images, dataset.train_normals, strict=True):
        np.testing.assert_array_equal(prepared, prepare_crop(image, SPEC))


def test_rgb_folder_and_mixed_sizes_are_reported(tmp_path: Path) -> None:
    write_pngs(tmp_path / "train" / "good", normal_images(4, 20, rgb=True), prefix="a")
    write_pngs(tmp_path / "train" / "good", normal_images(2, 30, rgb=True), prefix="b")
    dataset = load_dataset(tmp_path, make_spec(16, 3))
    assert dataset.train_normals.shape == (6, 16, 16, 3)
    assert any("2 sizes" in note for note in dataset.notes)


def test_plain_folder_of_images_is_all_normals(tmp_path: Path) -> None:
    write_pngs(tmp_path, normal_images(5, 16))
    dataset = load_dataset(tmp_path, SPEC)
    assert len(dataset.train_normals) == 5 and len(dataset.test_anomalies) == 0
    assert any("taken as normals" in note for note in dataset.notes)


def test_npz_layouts_and_labels(tmp_path: Path) -> None:
    normals, anomalies = normal_images(12, 16), anomaly_images(4, 16)
    x = np.concatenate([normals, anomalies])
    y = np.r_[np.zeros(12), np.ones(4)].astype(np.int64)
    for name, array, shape in (
        ("nhw.npz", x, None),
        ("nhwc.npz", x[..., None], None),
        ("flat.npz", x.reshape(len(x), -1), (16, 16)),
        ("float.npz", x.astype(np.float32) / 255.0, None),
    ):
        path = tmp_path / name
        np.savez(path, x=array, y=y)
        dataset = load_dataset(path, SPEC, shape=shape)
        assert dataset.train_normals.shape == (12, 16, 16, 1), name
        assert dataset.test_anomalies.shape == (4, 16, 16, 1), name
        np.testing.assert_array_equal(dataset.train_normals[..., 0], normals, err_msg=name)


def test_corrupt_png_names_the_file(tmp_path: Path) -> None:
    good = tmp_path / "train" / "good"
    write_pngs(good, normal_images(3, 16))
    broken = good / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    with pytest.raises(ImageError, match=r"broken\.png.*(corrupt|cannot decode)"):
        load_dataset(tmp_path, SPEC)


def test_empty_train_folder(tmp_path: Path) -> None:
    (tmp_path / "train" / "good").mkdir(parents=True)
    with pytest.raises(DataError, match=r"train/good holds no images \(it is empty\)"):
        load_dataset(tmp_path, SPEC)


def test_folder_without_normals(tmp_path: Path) -> None:
    write_pngs(tmp_path / "test" / "crack", anomaly_images(3, 16))
    with pytest.raises(DataError, match=r"no train/good/ folder and no images"):
        load_dataset(tmp_path, SPEC)


def test_npz_without_x(tmp_path: Path) -> None:
    path = tmp_path / "data.npz"
    np.savez(path, images=normal_images(3, 16))
    with pytest.raises(DataError, match=r"data\.npz has no array 'x' \(found keys: \['images'\]\)"):
        load_dataset(path, SPEC)


def test_npz_wrong_or_missing_shape(tmp_path: Path) -> None:
    path = tmp_path / "flat.npz"
    np.savez(path, x=normal_images(3, 16).reshape(3, -1))
    with pytest.raises(DataError, match=r"--shape 20,20 needs 400"):
        load_dataset(path, SPEC, shape=(20, 20))
    with pytest.raises(DataError, match=r"flat rows.*--shape"):
        load_dataset(path, SPEC)


def test_npz_only_anomalies_and_bad_labels(tmp_path: Path) -> None:
    path = tmp_path / "all_bad.npz"
    np.savez(path, x=anomaly_images(3, 16), y=np.ones(3))
    with pytest.raises(DataError, match="training needs normal samples"):
        load_dataset(path, SPEC)
    np.savez(path, x=normal_images(3, 16), y=np.array([0, 1, 2]))
    with pytest.raises(DataError, match=r"labels \[0, 1, 2\]"):
        load_dataset(path, SPEC)


def test_missing_path_and_bad_shape_text(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no such file or folder"):
        load_dataset(tmp_path / "nope", SPEC)
    with pytest.raises(DataError, match="not H,W"):
        parse_shape("28;28")
    assert parse_shape("28,28,3") == (28, 28, 3)


def test_from_arrays_and_size_limits() -> None:
    dataset = from_arrays(SPEC, normal_images(4, 40), test_anomalies=anomaly_images(2, 12))
    assert dataset.train_normals.shape == (4, 16, 16, 1)
    assert dataset.test_anomalies.shape == (2, 16, 16, 1)
    with pytest.raises(DataError, match="outside"):
        make_spec(4, 1)


def test_large_rgb_png_is_resized_for_a_grey_model(tmp_path: Path) -> None:
    root = write_mvtec(tmp_path / "rgb", train=3, test_good=0, per_defect=1, size=28, rgb=True)
    dataset = load_dataset(root, SPEC)
    image = np.asarray(Image.open(sorted((root / "train" / "good").iterdir())[0]))
    np.testing.assert_array_equal(dataset.train_normals[0], prepare_crop(image, SPEC))


def test_npz_test_split_of_another_size_and_colour_is_resized_on_its_own(tmp_path: Path) -> None:
    # x: 28×28 grey with 2 anomalies; x_test: 32×32 RGB with 3 normals and 2 anomalies.
    x = np.full((6, 28, 28), 100, np.uint8)
    x_test = np.full((5, 32, 32, 3), 50, np.uint8)
    path = tmp_path / "mixed.npz"
    np.savez(path, x=x, y=np.array([0, 0, 0, 0, 1, 1]), x_test=x_test,
             y_test=np.array([0, 0, 0, 1, 1]))
    dataset = load_dataset(path, SPEC)
    assert dataset.train_normals.shape == (4, *SPEC.shape)
    assert dataset.test_normals.shape == (3, *SPEC.shape)
    assert dataset.test_anomalies.shape == (4, *SPEC.shape)
    assert np.all(dataset.test_anomalies[:2] == 100) and np.all(dataset.test_anomalies[2:] == 50)
    assert any("x_test images are 32×32 px" in note for note in dataset.summary["notes"])


def test_mixed_colour_and_skipped_files_are_said(tmp_path: Path) -> None:
    good = tmp_path / "train" / "good"
    write_pngs(good, normal_images(3, 20), prefix="grey")
    write_pngs(good, normal_images(2, 20, rgb=True), prefix="colour")
    (good / "notes.txt").write_text("not an image")
    Image.fromarray(normal_images(1, 20)[0]).save(good / "frame.gif")
    dataset = load_dataset(tmp_path, make_spec(20, 1))
    assert len(dataset.train_normals) == 5
    notes = " ".join(dataset.notes)
    assert "sizes" not in notes  # all 20×20: one size, whatever the colour
    assert "2 of 5 images are colour and were made grey" in notes
    assert "2 file(s) skipped" in notes and "notes.txt" in notes and "frame.gif" in notes


def test_a_truncated_or_fake_npz_is_a_data_error(tmp_path: Path) -> None:
    good = tmp_path / "good.npz"
    np.savez(good, x=normal_images(8, 16))
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(good.read_bytes()[:200])
    fake = tmp_path / "fake.npz"
    fake.write_text("these are not arrays")
    for path in (truncated, fake):
        with pytest.raises(DataError, match=r"cannot read as \.npz.*numpy\.savez") as caught:
            load_dataset(path, make_spec(16, 1))
        assert str(path) in str(caught.value)
    single = tmp_path / "single.npz"  # one bare array saved with numpy.save: taken as x
    with single.open("wb") as handle:
        np.save(handle, normal_images(8, 16))
    assert load_dataset(single, make_spec(16, 1)).train_normals.shape == (8, 16, 16, 1)


def test_grey_images_with_one_channel_axis_are_not_called_colour() -> None:
    images = normal_images(5, 16)
    assert from_arrays(make_spec(16, 1), images[..., None]).notes == []
    assert from_arrays(make_spec(16, 1), images).notes == []
    assert any("5 of 5 images are colour" in note
               for note in from_arrays(make_spec(16, 1), np.stack([images] * 3, axis=-1)).notes)
