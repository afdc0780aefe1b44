"""``trainer report`` writes the four PNGs users look at, from a real bundle and real files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from trainer_support import normal_images, write_pngs

from trainer.cli import main
from trainer.report import (
    HISTOGRAM_FILE,
    LEARNING_CURVE_FILE,
    RECONSTRUCTIONS_FILE,
    ROC_FILE,
    plot_score_histogram,
)

MAX_PNG_BYTES = 150_000  # docs embed these; keep them small


@pytest.mark.slow
def test_report_cli_writes_four_small_pngs(trainer_bundle: Path, trainer_mvtec_dir: Path,
                                           tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "report"
    assert main(["report", str(trainer_bundle), str(trainer_mvtec_dir), "--out", str(out),
                 "--samples", "4"]) == 0
    printed = capsys.readouterr().out
    for name in (LEARNING_CURVE_FILE, RECONSTRUCTIONS_FILE, HISTOGRAM_FILE, ROC_FILE):
        path = out / name
        assert path.is_file(), name
        assert str(path) in printed
        assert 0 < path.stat().st_size < MAX_PNG_BYTES
        with Image.open(path) as image:
            assert image.format == "PNG" and min(image.size) > 100


def test_histogram_draws_both_band_edges(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import trainer.report as report

    drawn: list[dict[str, object]] = []
    save = report._save

    def keep_lines(fig, path):  # type: ignore[no-untyped-def]
        # Vertical lines: x data is (value, value). Read before the figure is closed.
        drawn.extend({"x": tuple(line.get_xdata()), "label": line.get_label()}
                     for line in fig.axes[0].get_lines())
        return save(fig, path)

    monkeypatch.setattr(report, "_save", keep_lines)
    rng = np.random.default_rng(0)
    path = plot_score_histogram(rng.normal(0.01, 0.002, 200), rng.normal(0.03, 0.01, 50),
                                tmp_path / "h.png", high=0.015, low=0.005)
    with Image.open(path) as image:
        assert image.format == "PNG"
    edges = {line["x"]: line["label"] for line in drawn}
    assert set(edges) == {(0.015, 0.015), (0.005, 0.005)}, drawn
    assert "0.015" in str(edges[(0.015, 0.015)]) and "0.005" in str(edges[(0.005, 0.005)])


def test_report_without_anomalies_says_so(trainer_bundle: Path, tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    normals_only = tmp_path / "normals"
    write_pngs(normals_only, normal_images(4, 16))
    code = main(["report", str(trainer_bundle), str(normals_only), "--out", str(tmp_path / "r")])
    assert code != 0
    assert "no anomalies" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()  # nothing half-written


def test_report_with_no_samples_is_a_one_line_error(trainer_bundle: Path, trainer_mvtec_dir: Path,
                                                    tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    for samples in ("0", "-3"):
        code = main(["report", str(trainer_bundle), str(trainer_mvtec_dir), "--out",
                     str(tmp_path / "r"), "--samples", samples])
        err = capsys.readouterr().err
        assert code == 2 and err.startswith("trainer: error: --samples") and err.count("\n") == 1


def test_evaluate_says_how_the_data_was_fitted_to_the_bundle(trainer_bundle: Path,
                                                            tmp_path: Path) -> None:
    from trainer_support import anomaly_images

    from trainer.evaluate import evaluate_bundle, format_report

    data = tmp_path / "colour"  # the bundle is grey at 16 px: these are colour at 24 px
    write_pngs(data / "test" / "good", normal_images(6, 24, rgb=True))
    write_pngs(data / "test" / "spill", anomaly_images(4, 24, rgb=True))
    write_pngs(data / "train" / "good", normal_images(4, 24, rgb=True))
    result = evaluate_bundle(trainer_bundle, data)
    text = format_report(result)
    assert "note:" in text and "resized to 16×16" in text and "made grey" in text
