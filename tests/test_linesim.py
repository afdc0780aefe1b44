"""The synthetic production line is deterministic and its ground truth matches its pixels."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from linesim import DEFECTS, LineScene, SceneConfig, write_crops, write_scene
from linesim.writer import well_crops


def test_same_seed_same_frames_different_seed_different_frames() -> None:
    a, truth_a = LineScene(seed=3).frame(7)
    b, truth_b = LineScene(seed=3).frame(7)
    c, _ = LineScene(seed=4).frame(7)
    assert np.array_equal(a, b)
    assert truth_a.anomalies == truth_b.anomalies
    assert not np.array_equal(a, c)


def test_frame_size_follows_the_grid() -> None:
    config = SceneConfig(rows=2, cols=3, pitch_px=32, margin_px=10)
    image, _ = LineScene(config).frame(0)
    assert image.shape == (2 * 10 + 2 * 32, 2 * 10 + 3 * 32)
    assert image.dtype == np.uint8


@pytest.mark.parametrize("defect", DEFECTS)
def test_each_defect_changes_only_its_own_well(defect: str) -> None:
    scene = LineScene(SceneConfig(anomaly_rate=0.0), seed=5)
    clean, truth_clean = scene.frame(11)
    damaged, truth = scene.frame(11, force={"r1c2": defect})
    assert truth_clean.anomalies == {}
    assert truth.anomalies == {"r1c2": defect}
    before = well_crops(scene, clean)
    after = well_crops(scene, damaged)
    changed = {name for name in before
               if np.abs(before[name].astype(int) - after[name].astype(int)).mean() > 0.5}
    assert changed == {"r1c2"}, f"{defect} changed wells {changed}"


@pytest.mark.parametrize("defect", DEFECTS)
def test_no_defect_reaches_a_neighbouring_well_by_a_single_pixel(defect: str) -> None:
    # A spill's tongue, with the tray and well shifts, used to reach up to 16 px into the next
    # well, which was labelled normal (44 of 200 forced spills did).
    scene = LineScene(SceneConfig(anomaly_rate=0.0), seed=2)
    for index in range(40):
        well = f"r{index % 4}c{(index * 5) % 6}"
        before = well_crops(scene, scene.frame(index)[0])
        after = well_crops(scene, scene.frame(index, force={well: defect})[0])
        leaked = [name for name in before
                  if name != well and not np.array_equal(before[name], after[name])]
        assert leaked == [], f"{defect} in {well} of frame {index} changed {leaked}"


def test_anomaly_rate_is_respected_roughly() -> None:
    scene = LineScene(SceneConfig(anomaly_rate=0.1), seed=0)
    wells = anomalies = 0
    for index in range(40):
        _, truth = scene.frame(index)
        wells += scene.config.rows * scene.config.cols
        anomalies += len(truth.anomalies)
    assert 0.06 < anomalies / wells < 0.14


def test_write_scene_and_crops_round_trip(tmp_path: Path) -> None:
    scene = LineScene(SceneConfig(rows=2, cols=2, anomaly_rate=0.5), seed=1)
    truth = write_scene(scene, tmp_path / "frames", 3)
    on_disk = json.loads((tmp_path / "frames" / "truth.json").read_text())
    assert on_disk == truth
    assert len(on_disk["frames"]) == 3
    first = np.asarray(Image.open(tmp_path / "frames" / on_disk["frames"][0]["file"]))
    assert np.array_equal(first, scene.frame(0)[0])
    counts = write_crops(scene, tmp_path / "crops", train_frames=2, test_frames=2)
    assert counts["train/good"] == 8
    assert sum(n for folder, n in counts.items() if folder.startswith("test/")) == 8
    assert not any((tmp_path / "crops" / "train").glob("*/*spill*"))


def test_the_local_broker_listens_and_leaves_nothing_behind() -> None:
    import socket

    from linesim.broker import LocalBroker, find_mosquitto

    if find_mosquitto() is None:
        pytest.skip("Mosquitto is not installed (scripts/test.sh installs it)")
    with LocalBroker() as broker:
        workdir = broker._dir
        with socket.create_connection(("127.0.0.1", broker.port), timeout=2):
            pass
        assert broker.kind == "mosquitto" and workdir.is_dir()
    assert broker.pid is None and not workdir.exists()  # no /tmp/broker-* left per demo run
