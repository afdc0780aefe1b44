"""``trainer fit`` → ``edge score`` → ``trainer evaluate`` as a user runs them, in subprocesses."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from trainer_support import anomaly_images, normal_images, write_pngs

from trainer.cli import main

SUBPROCESS_TIMEOUT_S = 240
# Lines TensorFlow / the converter print when they are not silenced.
FRAMEWORK_NOISE = ("Saved artifact", "fully_quantize", "oneDNN", "absl::InitializeLog",
                   "TensorSpec", "XNNPACK")


def _run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {key: value for key, value in os.environ.items()
           if key not in ("TF_CPP_MIN_LOG_LEVEL", "TF_ENABLE_ONEDNN_OPTS")}
    return subprocess.run([sys.executable, "-m", *args], cwd=cwd, env=env, text=True,
                          capture_output=True, timeout=SUBPROCESS_TIMEOUT_S, check=False)


@pytest.mark.slow
def test_fit_score_evaluate_round_trip(tmp_path: Path) -> None:
    normals, anomalies = normal_images(160, 20, seed=11), anomaly_images(20, 20, seed=12)
    x = np.concatenate([normals, anomalies]).reshape(180, -1)  # flat rows: needs --shape
    y = np.r_[np.zeros(160), np.ones(20)].astype(np.int64)
    np.savez(tmp_path / "line.npz", x=x, y=y)
    bundle = tmp_path / "models" / "cli"

    fit = _run("trainer", "fit", "line.npz", "--shape", "20,20", "--size", "16", "--steps", "250",
               "--batch-sizes", "1,8", "--threshold", "youden", "--out", str(bundle),
               "--no-progress", cwd=tmp_path)
    assert fit.returncode == 0, fit.stderr
    assert "wrote" in fit.stderr and "round 1/" in fit.stderr
    assert not [noise for noise in FRAMEWORK_NOISE if noise in fit.stdout + fit.stderr]
    data = json.loads((bundle / "bundle.json").read_text())
    assert [m["batch_size"] for m in data["models"]] == [1, 8]
    assert not (bundle / "float_model.keras").exists()  # only with --keep-float

    write_pngs(tmp_path / "ok", normal_images(5, 20, seed=99))
    write_pngs(tmp_path / "bad", anomaly_images(4, 20, seed=98))
    score = _run("edge", "score", str(bundle), "ok", "bad", cwd=tmp_path)
    assert score.returncode == 0, score.stderr
    lines = [line.split("\t") for line in score.stdout.strip().splitlines()]
    assert len(lines) == 9 and all(len(fields) == 4 for fields in lines)
    states = {path: state for path, _, _, state in lines}
    assert sum(state == "anomaly" for path, state in states.items() if path.startswith("bad")) >= 3
    assert sum(state == "ok" for path, state in states.items() if path.startswith("ok")) >= 4
    assert all(fields[2].startswith("> ") for fields in lines)

    evaluate = _run("trainer", "evaluate", str(bundle), "line.npz", "--shape", "20,20", "--json",
                    cwd=tmp_path)
    assert evaluate.returncode == 0, evaluate.stderr
    result = json.loads(evaluate.stdout)
    assert result["int8"]["auroc"] >= 0.95 and "float" not in result
    # youden chose its bound on these very anomalies: the figures at it are flagged as optimistic.
    [caveat] = result["caveats"]
    assert "chosen on 20 anomalies of this same data" in caveat and "optimistic" in caveat


def test_errors_are_one_line_with_the_error_code(tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["fit", str(tmp_path / "missing"), "--out", str(tmp_path / "m")]) == 4
    err = capsys.readouterr().err
    assert err.startswith("trainer: error: ") and err.count("\n") == 1
    assert "no such file or folder" in err

    np.savez(tmp_path / "normals.npz", x=normal_images(20, 16))
    assert main(["fit", str(tmp_path / "normals.npz"), "--out", str(tmp_path / "m"),
                 "--threshold", "youden"]) == 4  # checked before any training
    assert "needs labeled anomalies" in capsys.readouterr().err

    assert main(["fit", str(tmp_path / "normals.npz"), "--out", str(tmp_path / "m"),
                 "--threshold", "median"]) == 2
    assert "unknown rule 'median'" in capsys.readouterr().err

    assert main(["fit", str(tmp_path / "normals.npz"), "--out", str(tmp_path / "m"),
                 "--augment", "rotate"]) == 2
    assert "--augment rotate is unknown" in capsys.readouterr().err

    for rate in ("-1", "0", "nan"):  # checked before any training, like the rest
        assert main(["fit", str(tmp_path / "normals.npz"), "--out", str(tmp_path / "m"),
                     "--learning-rate", rate]) == 2
        assert "--learning-rate" in capsys.readouterr().err

    (tmp_path / "a-file").write_text("in the way")
    assert main(["fit", str(tmp_path / "normals.npz"), "--out",
                 str(tmp_path / "a-file" / "m")]) == 2  # before training, not after it
    err = capsys.readouterr().err
    assert err.startswith("trainer: error: --out") and "cannot create its folder" in err

    # A file system error anywhere else (here: keygen through a file) is one line too.
    assert main(["keygen", "--out", str(tmp_path / "a-file" / "key")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("trainer: error: ") and err.count("\n") == 1, err
    assert "a-file" in err and "Traceback" not in err
