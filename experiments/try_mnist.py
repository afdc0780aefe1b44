"""One-digit trial of an MNIST recipe (how the benchmark's recipe was chosen).

    MODEL=ae python experiments/try_mnist.py DIGIT FILTERS LATENT STEPS [AUGMENT] [LR] [BATCH]

e.g. ``python experiments/try_mnist.py 8 32,64,64,64 8 1500 noise 0.002 64``. Prints one JSON
line: AUROC of the int8 and float models on the protocol's test split, TPR/TNR at the
normals-only ``quantile:0.98`` threshold, training time and model bytes.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from shared_data import protocol_split

from trainer.data import from_arrays, make_spec
from trainer.evaluate import evaluate_bundle
from trainer.pipeline import fit_bundle_detailed

SIDE_PX = 28


def main() -> int:
    digit, filters = int(sys.argv[1]), tuple(map(int, sys.argv[2].split(",")))
    latent, steps = int(sys.argv[3]), int(sys.argv[4])
    augment = tuple(a for a in (sys.argv[5] if len(sys.argv) > 5 else "").split(",") if a)
    learning_rate = float(sys.argv[6]) if len(sys.argv) > 6 else 1e-3
    batch = int(sys.argv[7]) if len(sys.argv) > 7 else 32
    model = os.environ.get("MODEL", "ae")
    train, test_normals, anomalies = protocol_split(digit)
    dataset = from_arrays(make_spec(SIDE_PX, 1), train, test_normals, anomalies,
                          source=f"mnist{digit}")
    out = Path(tempfile.mkdtemp()) / "bundle"
    started = time.time()
    result = fit_bundle_detailed(
        dataset, out, size=SIDE_PX, channels=1, shape=None, model=model, filters=filters,
        latent=latent, steps=steps, epochs=None, batch_size=batch, learning_rate=learning_rate,
        val_fraction=0.2, augment=augment, threshold="quantile:0.98", batch_sizes=(1, 64),
        seed=0, keep_float=True, name="trial", progress=False, report=lambda m: None)
    fit_seconds = time.time() - started
    metrics = evaluate_bundle(out, dataset)
    training = json.loads((out / "bundle.json").read_text())["training"]
    print(json.dumps({
        "model": model, "digit": digit, "filters": filters, "latent": latent, "steps": steps,
        "augment": augment, "learning_rate": learning_rate, "batch": batch,
        "steps_run": training["steps_run"], "best_round": training["best_round"],
        "fit_s": round(fit_seconds, 1), "auroc_int8": round(metrics["int8"]["auroc"], 4),
        "auroc_float": round(metrics["float"]["auroc"], 4),
        "tpr": round(metrics["int8"]["tpr"], 4), "tnr": round(metrics["int8"]["tnr"], 4),
        "bytes": result.model_bytes}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
