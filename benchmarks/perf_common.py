"""What the four speed benchmarks share: the benchmark bundle, the replay, statistics, tables.

The benchmarks time one trained model, exported the way the product exports it
(``trainer.fit_bundle`` with int8 models for batch 1, 8, 24 and 32 and the float reference kept),
on crops of the synthetic casting line (``linesim``). Training happens once per work folder, in a
child process, so that no benchmark of the edge carries TensorFlow in its own process:

    python benchmarks/perf_common.py train --work DIR [--steps N]

Every benchmark prints its table and writes ``benchmarks/results/perf_<name>.json`` with the
figures, the table, the machine and its load while it ran.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

RESULTS_ENV = "PERF_RESULTS_DIR"  # where report() writes instead (perf_before_after.py uses it)
PUBLISHED_RESULTS = ROOT / "benchmarks" / "results"  # what docs/performance.md is made from
DEFAULT_WORK = Path(tempfile.gettempdir()) / "edge-anomaly-perf"
BUNDLE_BATCH_SIZES = (1, 8, 24, 32)  # 24 = the crops of one tray (4 × 6 wells)
MODEL_OPTIONS: dict[str, Any] = {"size": 32, "filters": (16, 32, 64), "latent": 8}
TRAIN_STEPS = 1500  # the trainer's default budget
QUICK_TRAIN_STEPS = 300  # speed does not depend on how well the model learned
TRAIN_SEED, REPLAY_SEED = 1, 2  # the demo's seeds: trained on one stretch, replayed on another
TRAIN_FRAMES, TEST_FRAMES = 40, 10
THRESHOLD_RULE = "quantile:0.995"
US_PER_S = 1e6
MS_PER_S = 1e3
P99 = 99.0
PIP_TIMEOUT_S = 600.0
TFLITE_RUNTIME = "tflite-runtime>=2.14"  # newest wheel for CPython 3.11: 2.14, built on numpy 1.x


@dataclass(frozen=True)
class Timing:
    """Median and 99th percentile of a list of durations, in seconds."""

    median_s: float
    p99_s: float
    samples: int

    @classmethod
    def of(cls, seconds: Sequence[float]) -> Timing:
        values = np.asarray(seconds, dtype=np.float64)
        return cls(float(np.median(values)), float(np.percentile(values, P99)), len(values))


def library_version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"


def machine() -> dict[str, Any]:
    """The machine and its load right now (others share its cores: the load is part of a run)."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": cpu, "cores": os.cpu_count(), "load_avg_1_5_15": [round(v, 2) for v in
                                                                   os.getloadavg()],
        "python": platform.python_version(), "numpy": np.__version__,
        "ai-edge-litert": library_version("ai-edge-litert"),
        "utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def parser(description: str) -> argparse.ArgumentParser:
    """The options every benchmark takes."""
    cli = argparse.ArgumentParser(description=description,
                                  formatter_class=argparse.RawDescriptionHelpFormatter)
    cli.add_argument("--quick", action="store_true", help="fewer repetitions (under a minute)")
    cli.add_argument("--work", type=Path, default=DEFAULT_WORK,
                     help=f"scratch folder: bundle, replay, venvs (default {DEFAULT_WORK})")
    cli.add_argument("--bundle", type=Path, default=None,
                     help="benchmark this bundle (needs float_model.keras and batch 1/8/24/32 "
                          "models) instead of training one into the work folder")
    return cli


def ensure_bundle(work: Path, quick: bool, bundle: Path | None = None) -> Path:
    """The benchmark bundle: ``bundle`` if given, else the work folder's (trained once)."""
    if bundle is not None:
        return bundle.resolve()  # configs written elsewhere resolve relative paths differently
    steps = QUICK_TRAIN_STEPS if quick else TRAIN_STEPS
    target = work / f"bundle-{steps}-steps"
    if not (target / "bundle.json").exists() or not (target / "float_model.keras").exists():
        print(f"training the benchmark bundle ({steps} steps) into {target} ...", flush=True)
        subprocess.run([sys.executable, str(Path(__file__)), "train", "--work", str(work),
                        "--steps", str(steps)], check=True)
    return target


def _train(work: Path, steps: int) -> Path:
    from linesim import LineScene, SceneConfig, write_crops
    from trainer import fit_bundle

    crops = work / "crops"
    if not crops.exists():
        write_crops(LineScene(SceneConfig(), seed=TRAIN_SEED), crops, train_frames=TRAIN_FRAMES,
                    test_frames=TEST_FRAMES)
    target = work / f"bundle-{steps}-steps"
    return fit_bundle(crops, target, **MODEL_OPTIONS, batch_sizes=BUNDLE_BATCH_SIZES,
                      keep_float=True, steps=steps, threshold=THRESHOLD_RULE, name="perf-wells")


def ensure_replay(work: Path, frames: int, normal_only: bool = False) -> Path:
    """A replay folder of ``frames`` trays of the synthetic line (seed of the demo replay);
    ``normal_only``: the same line without defects."""
    from linesim import LineScene, SceneConfig, write_scene

    folder = work / f"line-{'normal-' if normal_only else ''}{frames}"
    if not (folder / "truth.json").exists():
        write_scene(LineScene(SceneConfig(), seed=REPLAY_SEED), folder, frames,
                    normal_only=normal_only)
    return folder


def test_crops(work: Path, bundle: Path, count: int) -> np.ndarray:
    """``count`` prepared well crops (normal and defective) as one (N, H, W, C) uint8 batch."""
    from edge.bundle import load_bundle
    from edge.layout import Layout
    from edge.preprocess import load_image
    from edge.types import Box
    from linesim import SceneConfig

    scene = SceneConfig()
    spec = load_bundle(bundle).input
    boxes = [(scene.well_name(r, c), Box(*scene.well_box(r, c)))
             for r in range(scene.rows) for c in range(scene.cols)]
    layout = Layout(boxes)
    replay = ensure_replay(work, max(1, -(-count // len(boxes))))
    frames = sorted(replay.glob("*.png"))
    batches = [layout.batch(load_image(path), spec) for path in frames]
    return np.concatenate(batches)[:count]


def make_venv(path: Path, requirements: Sequence[str], timeout_s: float = PIP_TIMEOUT_S) -> str:
    """Create a throwaway venv at ``path`` with ``requirements``; '' on success, else why not."""
    if (path / "bin" / "python").exists():
        return ""
    base = Path(getattr(sys, "_base_executable", sys.executable))
    try:
        subprocess.run([str(base), "-m", "venv", str(path)], check=True, capture_output=True,
                       timeout=timeout_s)
        subprocess.run([str(path / "bin" / "python"), "-m", "pip", "install", "-q",
                        "--disable-pip-version-check", *requirements], check=True,
                       capture_output=True, text=True, timeout=timeout_s)
    except subprocess.CalledProcessError as exc:
        shutil.rmtree(path, ignore_errors=True)
        tail = (exc.stderr or exc.stdout or "").strip().splitlines()[-2:]
        return f"pip install {' '.join(requirements)} failed: {' '.join(tail)}"
    except subprocess.TimeoutExpired:
        shutil.rmtree(path, ignore_errors=True)
        return f"pip install {' '.join(requirements)} took more than {timeout_s:g} s"
    return ""


def _probe(python: Path, bundle: Path) -> str:
    """Build a tflite-runtime Scorer in ``python``'s venv; '' when it works, else the error."""
    code = ("import sys; sys.path.insert(0, sys.argv[1]); from edge.bundle import load_bundle; "
            "from edge.scoring import Scorer; "
            "Scorer(load_bundle(sys.argv[2]), backend='tflite-runtime')")
    done = subprocess.run([str(python), "-c", code, str(ROOT), str(bundle)],
                          capture_output=True, text=True, timeout=PIP_TIMEOUT_S)
    lines = done.stderr.strip().splitlines()
    return "" if done.returncode == 0 else (lines[-1] if lines else f"exit {done.returncode}")


def ensure_tflite_venv(work: Path, bundle: Path) -> tuple[Path | None, str]:
    """(python of a venv where tflite-runtime runs, or None; what was found, for the notes).

    The project venv is left alone: numpy 2 there is what TensorFlow 2.21 needs. A second
    throwaway venv with numpy 2 shows whether the wheel would run next to it.
    """
    cached = work / "tflite-runtime.json"
    if cached.exists():
        found = json.loads(cached.read_text())
    else:
        found = {}
        for key, numpy_pin in (("numpy2", "numpy>=2"), ("numpy1", "numpy<2")):
            venv = work / f"tflite-{key}-venv"
            problem = make_venv(venv, [numpy_pin, TFLITE_RUNTIME])
            found[key] = problem or _probe(venv / "bin" / "python", bundle) or "ok"
        cached.write_text(json.dumps(found))
    numpy2 = ("with numpy 2 (as in the project venv) pip installs it but it does not run: "
              f"{found['numpy2']}") if found["numpy2"] != "ok" else "it also runs with numpy 2"
    if found["numpy1"] != "ok":
        return None, f"no venv could run it ({found['numpy1']}); {numpy2}"
    python = work / "tflite-numpy1-venv" / "bin" / "python"
    versions = subprocess.run(
        [str(python), "-c", "import numpy, importlib.metadata as m; "
         "print(m.version('tflite-runtime'), numpy.__version__)"],
        capture_output=True, text=True, check=True).stdout.split()
    return python, (f"tflite-runtime {versions[0]} measured in its own venv with numpy "
                    f"{versions[1]}; {numpy2}")


def table_lines(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    """A Markdown table (also readable as plain text)."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join(" --- " for _ in headers) + "|"]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return lines


def results_dir(quick: bool, work: Path) -> Path:
    """Where results are written and read: $PERF_RESULTS_DIR when set; else a quick run's under
    its work folder, so that checking the benchmarks never replaces the published results."""
    if os.environ.get(RESULTS_ENV):
        return Path(os.environ[RESULTS_ENV])
    return work / "results" if quick else PUBLISHED_RESULTS


def report(name: str, title: str, headers: Sequence[str], rows: Sequence[Sequence[Any]],
           figures: dict[str, Any], quick: bool, notes: Sequence[str] = (), *,
           work: Path = DEFAULT_WORK) -> Path:
    """Print the table and notes; write perf_<name>.json into :func:`results_dir`."""
    print(f"\n{title}\n")
    print("\n".join(table_lines(headers, rows)))
    for note in notes:
        print(f"- {note}")
    folder = results_dir(quick, work)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"perf_{name}.json"
    payload = {"benchmark": name, "title": title, "quick": quick,
               "command": command_line(),
               "machine": machine(), "table": {"headers": list(headers),
                                                 "rows": [list(map(str, r)) for r in rows]},
               "notes": list(notes), "figures": figures}
    path.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    print(f"\nwrote {path}")
    return path


def command_line(argv: Sequence[str] | None = None) -> str:
    """This run's command as one types it from the repository root."""
    args = list(sys.argv if argv is None else argv)
    script = Path(args[0]).resolve()
    shown = script.relative_to(ROOT) if script.is_relative_to(ROOT) else script
    return " ".join(["python", str(shown), *args[1:]])


def fmt(value: float | None, digits: int = 1) -> str:
    """A number for a table; '–' when there is none."""
    return "–" if value is None else f"{value:,.{digits}f}"


def main(argv: Sequence[str] | None = None) -> int:
    cli = argparse.ArgumentParser(description="train the benchmark bundle (used by ensure_bundle)")
    cli.add_argument("command", choices=["train"])
    cli.add_argument("--work", type=Path, default=DEFAULT_WORK)
    cli.add_argument("--steps", type=int, default=TRAIN_STEPS)
    args = cli.parse_args(argv)
    args.work.mkdir(parents=True, exist_ok=True)
    print(f"bundle: {_train(args.work, args.steps)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())


class ThreadCpu:
    """CPU time of each Python thread of this process, by thread name, while active.

    Each thread started meanwhile adds its ``time.thread_time()`` when its ``run`` returns (exact,
    not sampled); the calling thread (the processing loop) is measured from enter to exit.
    Threads the interpreter library starts itself (XNNPACK's workers at 2 threads) are not Python
    threads: the process total minus these is reported as "native".
    """

    def __init__(self, labels: dict[str, str]) -> None:
        self.labels = labels  # thread name up to its first '-' → the label to report
        self.seconds: dict[str, float] = {}
        self._lock = threading.Lock()
        self._run: Any = None

    def __enter__(self) -> ThreadCpu:
        original = self._run = threading.Thread.run
        record = self._add

        def run(thread: threading.Thread) -> None:
            try:
                original(thread)
            finally:
                record(thread.name, time.thread_time())

        threading.Thread.run = run  # type: ignore[method-assign,assignment]
        self._main_started = time.thread_time()
        return self

    def __exit__(self, *exc: object) -> None:
        self._add("processing loop + start-up", time.thread_time() - self._main_started)
        threading.Thread.run = self._run  # type: ignore[method-assign]

    def _add(self, name: str, seconds: float) -> None:
        label = self.labels.get(name.split("-")[0], name)
        with self._lock:
            self.seconds[label] = self.seconds.get(label, 0.0) + seconds


def cpu_seconds(pid: int | None) -> float:
    """User + system CPU time a process has used so far (Linux /proc; 0 where unreadable)."""
    if pid is None:
        return 0.0
    try:
        fields = Path(f"/proc/{pid}/stat").read_text(encoding="ascii").rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
