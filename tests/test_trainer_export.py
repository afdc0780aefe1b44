"""The trained bundle: fully int8, faithful to the float model, calibrated on int8 scores, and
accepted by the edge's own loader (a tampered one refused)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from test_trainer_model import graph_report
from trainer_support import anomaly_images, normal_images

from edge.bundle import load_bundle
from edge.errors import BundleError, ConfigError, DataError
from edge.scoring import Scorer, reconstruction_mse
from trainer.data import from_arrays, load_dataset, make_spec
from trainer.evaluate import evaluate_bundle, format_report
from trainer.export import FLOAT_KERAS_FILE, check_output_dir
from trainer.fit import FitOptions, fit_autoencoder
from trainer.model import ModelConfig
from trainer.quantize import representative_batches

MIN_PEARSON = 0.99
MIN_AUROC = 0.95


def _json(bundle: Path) -> dict:
    return json.loads((bundle / "bundle.json").read_text())


def test_every_exported_model_is_full_int8(trainer_bundle: Path) -> None:
    bundle = load_bundle(trainer_bundle)
    assert bundle.batch_sizes == (1, 16)
    for size in bundle.batch_sizes:
        _, problems = graph_report(bundle.model_path(size).read_bytes())
        assert problems == [], size


def test_bundle_json_has_every_field_the_design_lists(trainer_bundle: Path) -> None:
    data = _json(trainer_bundle)
    assert data["format_version"] == 1
    assert data["input"] == {"height": 16, "width": 16, "channels": 1, "color_mode": "grey",
                             "resize": "bilinear", "normalisation": "x/255"}
    assert data["score"]["name"] == "reconstruction_mse"
    threshold = data["threshold"]
    assert threshold["rule"] == "quantile:0.999" and threshold["params"] == {"q": 0.999}
    assert threshold["scores_from"] == "int8" and threshold["high"] > 0
    assert threshold["chosen_on"]["split"].startswith("held-back validation normals")
    assert threshold["chosen_on"]["normals"] == 40  # 20 % of 200
    normal = data["normal_scores"]
    assert normal["count"] == 40 and normal["scores_from"] == "int8"
    assert {"mean", "std", "min", "max"} <= set(normal)
    assert set(normal["quantiles"]) == {"0.5", "0.9", "0.95", "0.99", "0.999"}
    assert {"pearson", "spearman", "auroc_float", "auroc_int8"} <= set(data["agreement"])
    provenance = data["provenance"]
    assert {"data", "steps", "epochs", "seed", "libraries", "created_at", "model",
            "model_bytes", "conversion_seconds"} <= set(provenance)
    assert provenance["created_at"].endswith("Z")
    assert provenance["libraries"]["tensorflow-cpu"]
    assert provenance["model"]["filters"] == [16, 32]
    assert provenance["data"]["train_normals"] == 200
    history = data["training"]["history"]
    assert history and {"loss", "val_loss", "steps"} <= set(history[0])
    assert data["training"]["baseline"]["val_mse"] > 0
    # The weights shipped are those of the round with the lowest validation loss.
    val_losses = [entry["val_loss"] for entry in history]
    assert data["training"]["best_round"] == int(np.argmin(val_losses)) + 1


def test_int8_scores_agree_with_float(trainer_bundle: Path, trainer_mvtec_dir: Path) -> None:
    agreement = _json(trainer_bundle)["agreement"]  # what the trainer says of itself ...
    assert agreement["pearson"] >= MIN_PEARSON
    assert agreement["auroc_int8"] >= MIN_AUROC and agreement["auroc_float"] >= MIN_AUROC
    # ... checked here without the trainer's scoring code: the kept Keras model against the
    # device's int8 Scorer, on test crops the trainer never saw.
    from trainer.backend import keras

    bundle = load_bundle(trainer_bundle)
    data = load_dataset(trainer_mvtec_dir, bundle.input)
    crops = np.concatenate([data.test_normals, data.test_anomalies])
    model = keras.models.load_model(trainer_bundle / FLOAT_KERAS_FILE, compile=False)
    pixels = crops.astype(np.float32) / 255.0
    float_scores = ((model(pixels, training=False).numpy() - pixels) ** 2).mean(axis=(1, 2, 3))
    int8_scores = Scorer(bundle).score(crops)
    assert np.corrcoef(float_scores, int8_scores)[0, 1] >= MIN_PEARSON


def test_anomalies_score_above_normals(trainer_bundle: Path, trainer_mvtec_dir: Path) -> None:
    result = evaluate_bundle(trainer_bundle, trainer_mvtec_dir)
    assert result["split"] == "test normals + test anomalies"
    assert result["normals"] == 30 and result["anomalies"] == 20
    assert result["int8"]["auroc"] >= MIN_AUROC
    assert result["float"]["auroc"] >= MIN_AUROC  # float_model.keras was kept
    assert result["int8"]["tnr"] >= 0.9
    confusion = result["int8"]["confusion"]
    assert sum(confusion.values()) == 50
    assert "int8" in format_report(result) and "float" in format_report(result)
    assert result["caveats"] == []  # a normals-only threshold: nothing was fitted on anomalies


def test_batch_models_score_like_batch_one(trainer_bundle: Path,
                                           trainer_mvtec_dir: Path) -> None:
    bundle = load_bundle(trainer_bundle)
    crops = load_dataset(trainer_mvtec_dir, bundle.input).test_normals[:16]
    single = Scorer(bundle, batch_sizes=(1,)).score(crops)
    batched = Scorer(bundle).score(crops)  # one batch-16 invoke
    # Every batch size's model is calibrated on the same crops, so they hold the same int8
    # arithmetic: a crop scores exactly the same whatever the size of the batch it is in.
    np.testing.assert_array_equal(batched, single)


@pytest.mark.parametrize("count", [50, 16, 7])
def test_every_batch_size_calibrates_on_the_same_crops(count: int) -> None:
    # Crops told apart by one pixel; a batch size that left the last partial batch out would
    # calibrate on fewer of them than batch 1, and could get other scales.
    images = np.zeros((count, 4, 4, 1), dtype=np.uint8)
    images[:, 1, 1, 0] = np.arange(count) + 1

    def seen(batch_size: int) -> set[int]:
        values: set[int] = set()
        for (batch,) in representative_batches(images, batch_size, seed=3):
            assert batch.shape == (batch_size, 4, 4, 1)
            values.update(np.rint(batch[:, 1, 1, 0] * 255).astype(int).tolist())
        return values

    assert seen(1) == set(range(1, count + 1))
    for batch_size in (8, 16, 24):
        assert seen(batch_size) == seen(1), batch_size


def test_tampered_model_is_refused_by_the_edge(trainer_bundle: Path, tmp_path: Path) -> None:
    copy = tmp_path / "tampered"
    shutil.copytree(trainer_bundle, copy)
    model = copy / "model.tflite"
    blob = bytearray(model.read_bytes())
    blob[len(blob) // 2] ^= 0xFF
    model.write_bytes(bytes(blob))
    with pytest.raises(BundleError, match=r"sha256.*modified or truncated"):
        load_bundle(copy)


def test_float_model_kept_only_on_request(trainer_bundle: Path) -> None:
    assert (trainer_bundle / FLOAT_KERAS_FILE).is_file()
    assert not any(p.name.startswith(".") for p in trainer_bundle.parent.iterdir())  # no staging


def test_output_dir_that_is_not_a_bundle_is_refused(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match=r"not a bundle.*refusing to overwrite"):
        check_output_dir(tmp_path)
    check_output_dir(tmp_path / "new")  # a new directory is fine


def _tiny_fit(count: int, steps: int, seed: int = 0):
    spec = make_spec(16, 1)
    dataset = from_arrays(spec, normal_images(count, 16), test_anomalies=anomaly_images(4, 16))
    config = ModelConfig(height=16, width=16, channels=1, filters=(4, 8), latent=2)
    options = FitOptions(steps=steps, batch_size=8, seed=seed, augment=("shift", "hflip", "noise"))
    return fit_autoencoder(dataset, config, options, report=lambda message: None, progress=False)


def test_same_seed_same_weights_and_small_data_warnings() -> None:
    first, second = _tiny_fit(20, 10), _tiny_fit(20, 10)
    # Equal up to float summation order (a oneDNN build may reorder sums between runs).
    for a, b in zip(first.model.get_weights(), second.model.get_weights(), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
    assert [h["loss"] for h in first.history] == pytest.approx([h["loss"] for h in second.history],
                                                               rel=1e-4)
    assert len(first.val_normals) == 4 and len(first.train_normals) == 16
    joined = " ".join(first.warnings)
    assert "fewer than 50" in joined
    # Ten steps teach the autoencoder nothing: the PCA baseline must call that out.
    assert "no better than a linear baseline" in joined


def test_epochs_convert_to_steps() -> None:
    options = FitOptions(epochs=2, batch_size=8)
    spec = make_spec(16, 1)
    dataset = from_arrays(spec, normal_images(20, 16))
    config = ModelConfig(height=16, width=16, channels=1, filters=(4,), latent=2)
    fit = fit_autoencoder(dataset, config, options, report=lambda message: None, progress=False)
    assert fit.steps_budget == 2 * 2  # 16 training normals / batch 8 = 2 steps per epoch


@pytest.mark.parametrize("members", [1, 2])
def test_rgb_padded_size_from_a_dataset_object(tmp_path: Path, members: int) -> None:
    """30 px RGB (padded to 32 inside the model) through the whole pipeline, from arrays; with
    two members too (each pads and crops back on its own, scored over 2 × 3 channels)."""
    from trainer import fit_bundle

    spec = make_spec(30, 3)
    dataset = from_arrays(spec, normal_images(60, 30, rgb=True),
                          test_anomalies=anomaly_images(6, 30, rgb=True))
    bundle_dir = fit_bundle(dataset, tmp_path / "rgb", steps=20, filters=(4, 8), latent=2,
                            members=members, batch_sizes="1", threshold="max", progress=False,
                            report=lambda message: None)
    bundle = load_bundle(bundle_dir)
    assert bundle.members == members
    outputs = Scorer(bundle).outputs(dataset.train_normals[:2])
    assert outputs.shape == (2, 30, 30, 3 * members)
    assert bundle.input.shape == (30, 30, 3) and bundle.input.color_mode == "rgb"
    assert bundle.batch_sizes == (1,)
    ops, problems = graph_report(bundle.model_path(1).read_bytes())
    assert problems == [] and {"PAD", "STRIDED_SLICE"} <= ops
    scores = Scorer(bundle).score(dataset.train_normals[:3])
    assert scores.shape == (3,) and np.all(scores >= 0)
    assert bundle.threshold.rule == "max"



def test_cosine_schedule_without_early_stopping_trains_the_whole_budget() -> None:
    spec = make_spec(16, 1)
    dataset = from_arrays(spec, normal_images(60, 16), test_anomalies=anomaly_images(4, 16))
    config = ModelConfig(height=16, width=16, channels=1, filters=(4, 8), latent=2)
    options = FitOptions(steps=200, batch_size=8, augment=("noise", "erase"),
                         lr_schedule="cosine", patience_rounds=0)
    fit = fit_autoencoder(dataset, config, options, report=lambda message: None, progress=False)
    assert fit.steps_run == 200 and len(fit.history) == 4  # rounds of 50 steps, none cut short
    assert fit.best_round == 4  # the last weights are kept
    assert fit.model.optimizer.learning_rate.numpy() == pytest.approx(0.0, abs=1e-9)
    with pytest.raises(ConfigError, match="--lr-schedule 'linear' is unknown"):
        FitOptions(lr_schedule="linear")
    with pytest.raises(ConfigError, match="--patience -1"):
        FitOptions(patience_rounds=-1)


def test_a_bundle_of_two_members_scores_the_mean_of_their_errors(tmp_path: Path) -> None:
    """--members 2: two autoencoders in one int8 model; the edge's score is the mean of the two
    members' MSEs, and the bundle says how many members there are."""
    from trainer import fit_bundle

    spec = make_spec(16, 1)
    dataset = from_arrays(spec, normal_images(60, 16), test_anomalies=anomaly_images(6, 16))
    bundle_dir = fit_bundle(dataset, tmp_path / "two", steps=40, filters=(4, 8), latent=2,
                            members=2, batch_sizes="1,4", threshold="quantile:0.9",
                            keep_float=True, progress=False, report=lambda message: None)
    bundle = load_bundle(bundle_dir)
    assert bundle.members == 2 and _json(bundle_dir)["score"]["members"] == 2
    assert _json(bundle_dir)["format_version"] == 2  # an older edge refuses it by its version
    ops, problems = graph_report(bundle.model_path(1).read_bytes())
    assert problems == [] and "CONCATENATION" in ops
    scorer = Scorer(bundle)
    crops = np.concatenate([dataset.train_normals[:5], dataset.test_anomalies[:2]])
    outputs = scorer.outputs(crops)
    assert outputs.shape == (7, 16, 16, 2)  # one reconstruction per member, side by side
    unit = (crops.astype(np.float32) / np.float32(255)).astype(np.float64)  # as the edge does
    per_member = [((outputs[..., k:k + 1] - unit) ** 2).reshape(7, -1).mean(axis=1)
                  for k in range(2)]
    assert not np.allclose(per_member[0], per_member[1])  # two models, not one twice
    np.testing.assert_allclose(scorer.score(crops), np.mean(per_member, axis=0), rtol=1e-12)
    assert scorer.reconstruct(crops).shape == crops.shape  # the members' mean, for pictures
    report = evaluate_bundle(bundle_dir, dataset)  # the kept float model loads and scores too
    assert 0.0 <= report["float"]["auroc"] <= 1.0
    from trainer.backend import keras

    compiled = keras.models.load_model(bundle_dir / FLOAT_KERAS_FILE)  # its loss is registered
    assert compiled.loss.members == 2
    with pytest.raises(ValueError, match="differ in shape"):  # 2 reconstructions, 1 expected
        reconstruction_mse(unit, outputs)
    # Batch 4 (7 crops: one full batch, then 3 padded into another) scores like batch 1.
    np.testing.assert_allclose(Scorer(bundle, batch_sizes=(1,)).score(crops),
                               scorer.score(crops), rtol=1e-9)
    with pytest.raises(ConfigError, match="--members 2 is not possible for --model vae"):
        ModelConfig(height=16, width=16, channels=1, kind="vae", members=2)


def test_a_bundle_with_a_bad_member_count_is_refused(trainer_bundle: Path, tmp_path: Path) -> None:
    copy = tmp_path / "bad-members"
    shutil.copytree(trainer_bundle, copy)
    data = _json(copy)
    data["score"]["members"] = 0
    (copy / "bundle.json").write_text(json.dumps(data), encoding="utf-8")
    with pytest.raises(BundleError, match=r"score\.members is 0"):
        load_bundle(copy)


@pytest.mark.parametrize("poisoned_round", [0, 3])
def test_a_diverged_run_exports_its_best_finite_round_or_nothing(
        monkeypatch: pytest.MonkeyPatch, poisoned_round: int) -> None:
    # Divergence on demand: the weights are made NaN at the start of one round (a real run
    # rarely diverges on cue; Adam and the sigmoid output keep this model finite at any rate).
    import trainer.fit as fit

    class Poison(fit._RoundLine):
        def on_epoch_begin(self, epoch: int, logs: object = None) -> None:
            if epoch == poisoned_round:
                self.model.set_weights([w * np.nan for w in self.model.get_weights()])

    monkeypatch.setattr(fit, "_RoundLine", Poison)
    spec = make_spec(16, 1)
    dataset = from_arrays(spec, normal_images(40, 16), test_anomalies=anomaly_images(4, 16))
    config = ModelConfig(height=16, width=16, channels=1, filters=(4, 8), latent=2)
    options = FitOptions(steps=600, batch_size=8, seed=0, patience_rounds=2)
    if poisoned_round == 0:
        with pytest.raises(DataError, match=r"training diverged.*nothing was exported"):
            fit.fit_autoencoder(dataset, config, options, report=lambda m: None, progress=False)
        return
    result = fit.fit_autoencoder(dataset, config, options, report=lambda m: None,
                                 progress=False)
    assert result.best_round <= poisoned_round
    assert all(np.isfinite(w).all() for w in result.model.get_weights())
