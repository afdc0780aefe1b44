"""Write docs/results.md from benchmarks/results/*.json (run by run_quality.py at its end).

The page's numbers are never typed by hand: they are read from the JSON the benchmarks wrote, so
the tables, the plots in docs/img/ and the machine-readable results always agree.

    python benchmarks/quality_docs.py
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from quality_common import RESULTS_DIR, ROOT

DOC = ROOT / "docs" / "results.md"
ANOGAN = {"auroc": 0.95, "precision": 0.99, "recall": 0.89, "f1": 0.94}
TARGET_MEAN, TARGET_MIN = 0.985, 0.95  # issue 5: int8 mean AUROC, and no digit below
NOTES_FILE = Path(__file__).resolve().parent / "results_notes.md"
# Variations of the recipe, each run once after the main run: (results file, the option it
# changes, what the run asks). Shown beside the main run when their file exists.
OTHER_RUNS = (
    ("mnist_oneclass_3000steps.json", "steps",
     "Cosine decay over the longer budget. In the float-only trials, 1,500 steps instead of 600 "
     "lifted digit 8 by 0.02; this run shows what doubling again buys."),
    ("mnist_oneclass_3members.json", "members",
     "Three autoencoders of the recipe side by side in one int8 model, each from its own initial "
     "weights; the score is the mean of their reconstruction MSEs (three times the device's "
     "compute per crop). Float trials on validation data showed the seed alone moving digit 8 "
     "between 0.930 and 0.963 (results_notes below); this run shows what averaging buys. "
     "(Digits 0 and 2 shared the two cores with test runs: their times are longer.)"),
)


def _load(name: str) -> dict[str, Any] | None:
    path = RESULTS_DIR / name
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def _f(value: float | None, digits: int = 4) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def oneclass_section(data: dict[str, Any]) -> list[str]:
    s = data["summary"]
    recipe = data["recipe"]
    lines = [
        "## One-class MNIST (all ten digits)", "",
        f"Protocol: {' '.join(data['protocol'].split())}", "",
        f"Recipe, the same for every digit: {recipe['size']}×{recipe['size']} input, filters "
        f"{','.join(map(str, recipe['filters']))} (four stride-2 stages), latent "
        f"{recipe['latent']} channels at 2×2 (32 values), {recipe['steps']} steps of "
        f"{recipe['batch_size']}, Adam {recipe['learning_rate']:g} "
        f"({recipe.get('lr_schedule', 'constant')} schedule), augment "
        f"{','.join(recipe['augment']) or 'none'} (`noise`: denoising, `erase`: inpainting — "
        "an 8×8 square of the input blanked, the target whole), "
        + ("no early stopping." if recipe.get("patience") == 0 else
           "early stopping on held-back training normals only."), "",
        "| digit | AUROC float | AUROC int8 | \\|gap\\| | TPR @ thr | TNR @ thr | int8/float bytes "
        "| train s |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in data["rows"]:
        lines.append(f"| {r['digit']} | {_f(r['auroc_float'])} | {_f(r['auroc_int8'])} | "
                     f"{_f(r['auroc_gap'])} | {_f(r['tpr_at_threshold_int8'], 3)} | "
                     f"{_f(r['tnr_at_threshold_int8'], 3)} | {r['ratio']:.3f} "
                     f"({r['int8_bytes'] // 1000} / {r['float_bytes'] // 1000} kB) | "
                     f"{r['seconds']:.0f} |")
    lines += [
        f"| **mean** | **{_f(s['mean_auroc_float'])}** | **{_f(s['mean_auroc_int8'])}** | max "
        f"{_f(s['max_auroc_gap'])} | {_f(s['mean_tpr_at_threshold_int8'], 3)} | "
        f"{_f(s['mean_tnr_at_threshold_int8'], 3)} | max {s['max_size_ratio']:.3f} | "
        f"{s['total_seconds']:.0f} |", "",
        f"Worst digit: {s['worst_digit']} (int8 AUROC {_f(s['worst_auroc_int8'])}). "
        f"int8 within 0.002 of float on every digit: "
        f"{'yes' if s['int8_within_tolerance'] else 'no'}. Whole benchmark: "
        f"{s.get('wall_seconds', s['total_seconds']) / 60:.1f} min wall clock on 2 shared CPU "
        "cores.", "",
        "TPR / TNR are at the normals-only threshold `quantile:0.98` of held-back *training* "
        "normals (no anomaly is looked at), measured on the test split.", "",
        "Published mean AUROC on one-class MNIST, for comparison: "
        + ", ".join(f"{k} {v:.3f}" for k, v in data["published_mean_auroc"].items())
        + f"; this recipe: float {_f(s['mean_auroc_float'], 3)}, int8 "
        f"{_f(s['mean_auroc_int8'], 3)}.", "",
        "![AUROC per digit](img/mnist_oneclass_auroc.png)", "",
        target_line(s, _label(recipe, "members")), "",
    ]
    return lines


def _label(recipe: dict[str, Any], option: str) -> str:
    value = recipe.get(option, 1)
    return f"{value} {option if value != 1 else option.rstrip('s')}"


def other_training_section(main: dict[str, Any], other: dict[str, Any], file: str, option: str,
                           why: str) -> list[str]:
    """The recipe with one option changed, side by side with the main run."""
    by_digit = {r["digit"]: r for r in main["rows"]}
    os_, ms = other["summary"], main["summary"]
    label, main_label = _label(other["recipe"], option), _label(main["recipe"], option)
    lines = [
        f"### The same recipe with {label}", "",
        f"`python benchmarks/mnist_oneclass.py --{option} {other['recipe'][option]} --out-json "
        f"{file} --plot ''`. {why} It was run once, after the main run, and did not change the "
        "recipe.", "",
        f"| digit | {main_label} float | int8 | {label} float | int8 | train s |",
        "| ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in other["rows"]:
        m = by_digit.get(r["digit"], {})
        lines.append(f"| {r['digit']} | {_f(m.get('auroc_float'))} | {_f(m.get('auroc_int8'))} "
                     f"| {_f(r['auroc_float'])} | {_f(r['auroc_int8'])} | {r['seconds']:.0f} |")
    lines += [
        f"| **mean** | {_f(ms['mean_auroc_float'])} | {_f(ms['mean_auroc_int8'])} | "
        f"**{_f(os_['mean_auroc_float'])}** | **{_f(os_['mean_auroc_int8'])}** | "
        f"{os_['total_seconds']:.0f} |", "",
        f"Worst digit with {label}: {os_['worst_digit']} (int8 "
        f"{_f(os_['worst_auroc_int8'])}); largest int8–float gap {_f(os_['max_auroc_gap'])}; "
        f"mean TPR at the `quantile:0.98` threshold {_f(os_['mean_tpr_at_threshold_int8'], 3)} "
        f"(TNR {_f(os_['mean_tnr_at_threshold_int8'], 3)}); "
        f"{os_.get('wall_seconds', os_['total_seconds']) / 60:.1f} min for all ten digits.", "",
        target_line(os_, label), "",
    ]
    return lines


def target_line(summary: dict[str, Any], label: str) -> str:
    """Issue 5's target for the int8 bundle, judged from a run's summary."""
    met = (summary["mean_auroc_int8"] >= TARGET_MEAN and summary["worst_auroc_int8"] >= TARGET_MIN
           and summary["int8_within_tolerance"])
    return (f"Target (int8 mean ≥ {TARGET_MEAN}, no digit below {TARGET_MIN}, int8 within 0.002 "
            f"of float on every digit) with {label}: **{'met' if met else 'not met'}** (mean "
            f"{_f(summary['mean_auroc_int8'])}, worst {_f(summary['worst_auroc_int8'])}, largest "
            f"gap {_f(summary['max_auroc_gap'])}).")


def anogan_section(oneclass: dict[str, Any] | None,
                   repro: dict[str, Any] | None) -> list[str]:
    """Digit 0 against the rest at normals-only thresholds, beside AnoGAN's published figures."""
    points: list[tuple[str, dict[str, Any]]] = []
    row = next((r for r in (oneclass or {}).get("rows", []) if r["digit"] == 0), None)
    if row is not None and "at_threshold" in row:
        points.append(("one-class run, quantile:0.98", row["at_threshold"]))
    for rule, point in (repro or {}).get("digit0_vs_rest", {}).get("operating_points",
                                                                  {}).items():
        points.append((f"own run, {rule}", point))
    if not points:
        return []
    lines = [
        "## Digit 0 against the rest, beside AnoGAN", "",
        "Protocol split of digit 0; anomaly is the positive class; every threshold is a quantile "
        "of held-back *training* normals (no anomaly chooses it): of their int8 scores for the "
        "int8 rows (the bundle's threshold), of their float scores for the float rows.", "",
        "| model | threshold | AUROC | precision | recall | F1 |",
        "| --- | --- | ---: | ---: | ---: | ---: |",
        f"| AnoGAN (published) | – | {ANOGAN['auroc']:.2f} | {ANOGAN['precision']:.2f} | "
        f"{ANOGAN['recall']:.2f} | {ANOGAN['f1']:.2f} |",
    ]
    for where, point in points:
        for kind in ("float", "int8"):
            m = point[kind]
            lines.append(f"| this AE, {kind} | {where} | {_f(m['auroc'], 3)} | "
                         f"{_f(m['precision'], 3)} | {_f(m['recall'], 3)} | {_f(m['f1'], 3)} |")
    return [*lines, ""]


def mnist_repro_section(data: dict[str, Any]) -> list[str]:
    lines: list[str] = []
    split = data.get("split_0to4_vs_5to9")
    if split:
        lines += [
            "## Digits 0–4 normal, 5–9 anomalous (`max` rule)", "",
            f"{split['train_normals']} training normals (80 % of digits 0–4, seed 0), test on "
            f"the other {split['test_normals']} normals and all {split['anomalies']} images of "
            "5–9. Threshold: the largest held-back normal score — of the int8 scores for the "
            "int8 row (the bundle's threshold), of the float scores for the float row.", "",
            "| model | AUROC | TPR @ max | TNR @ max | precision | F1 |",
            "| --- | ---: | ---: | ---: | ---: | ---: |",
        ]
        for kind in ("float", "int8"):
            m = split[kind]
            lines.append(f"| {kind} | {_f(m['auroc'])} | {_f(m['tpr'], 3)} | {_f(m['tnr'], 3)} "
                         f"| {_f(m['precision'], 3)} | {_f(m['f1'], 3)} |")
        lines += ["", "![learning curve](img/mnist_split_learning_curve.png)",
                  "![originals and reconstructions](img/mnist_split_reconstructions.png)", ""]
    cont = data.get("contaminated_1_with_3")
    if cont:
        lines += [
            "## Digit 1 with 1 % of 3s mixed into training", "",
            f"{cont['train_images']} training images, {cont['threes_mixed_in']} of them 3s. "
            "Threshold: the 99.9 % quantile of the training images' own scores.", "",
            "| model | flagged | really 3 | 3s among the 100 worst | AUROC 3 vs 1 (training) "
            "| test AUROC |",
            "| --- | ---: | ---: | ---: | ---: | ---: |",
        ]
        for kind in ("float", "int8"):
            m = cont[kind]
            lines.append(f"| {kind} | {m['flagged']} | {m['flagged_really_3']} | "
                         f"{m['threes_in_top_100']} | {_f(m['auroc_3_vs_1_on_training'])} | "
                         f"{_f(cont[f'test_auroc_{kind}'])} |")
        lines += ["", "![worst reconstructions](img/recon_vis.png)",
                  "![loss](img/mnist_contaminated_loss.png)", ""]
    return lines


def casting_section(data: dict[str, Any]) -> list[str]:
    rows = data["rows"]
    first = rows[0]
    lines = [
        "## Casting line (linesim): AE against VAE, `maxmin` and `band`", "",
        f"{' '.join(data['description'].split())} {data['steps']} steps each.", "",
        f"Evaluation stretch: {first['evaluation_normals']} normal wells, "
        f"{first['evaluation_anomalies']} defective wells.", "",
        "| model | rule | bound(s) | TPR int8 | TNR int8 | TPR float | TNR float | AUROC int8 "
        "| ≥ 0.91 both (int8) |",
        "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for r in rows:
        t = r["threshold"]
        bound = (f"> {t['high']:.5f}" if t["low"] is None else
                 f"outside [{t['low']:.5f}, {t['high']:.5f}]" if t["high"] is not None else
                 f"< {t['low']:.5f}")
        lines.append(f"| {r['model']} | {r['rule']} | {bound} | {_f(r['int8']['tpr'], 3)} | "
                     f"{_f(r['int8']['tnr'], 3)} | {_f(r['float']['tpr'], 3)} | "
                     f"{_f(r['float']['tnr'], 3)} | {_f(r['int8']['auroc'])} | "
                     f"{'yes' if r['meets_target_int8'] else 'no'} |")
    lines += ["", "The bounds shown are the int8 bundle's; the float columns apply the same rule "
              "to the float model's scores of the same calibration data.",
              "", "![casting histogram](img/casting_histogram.png)",
              "![casting reconstructions](img/casting_reconstructions.png)",
              "![casting learning curve](img/casting_learning_curve.png)", ""]
    return lines


def size_section(data: dict[str, Any]) -> list[str]:
    lines = [
        "## int8 file size against float", "",
        "`python benchmarks/quality_size.py` converts each architecture with the trainer's own "
        "code and takes both flatbuffers apart (bytes):", "",
        "| model | params | int8 file | float file | ratio | weights+biases only | int8: quant. "
        "params | int8: names | int8: other | duplicated buffers |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in data["rows"]:
        i, f = r["int8"], r["float"]
        lines.append(f"| {r['model']} | {r['parameters']} | {i['total_bytes']} | "
                     f"{f['total_bytes']} | {r['ratio_file']:.3f} | {r['ratio_buffers_only']:.4f} "
                     f"| {i['quantization_param_bytes_approx']} | {i['tensor_name_bytes']} | "
                     f"{i['other_bytes']} | {len(i['duplicated_buffers'])} |")
    lines += [
        "", "What the int8 file carries beyond ¼ of the float one: int32 biases (4 bytes, as in "
        "float), per-output-channel quantization parameters (a float32 scale and an int64 zero "
        "point per channel, for weights and biases), and the flatbuffer's fixed tables (tensors, "
        "operators, signature, metadata) that both files have. There is no duplicated weight "
        "buffer, and the tensor names are 1–2 kB. The weight and bias payload alone is already "
        "above ¼, so no stripping of names or metadata can bring a full-int8 file to ¼ of its "
        "float twin; the ratio approaches 0.25 from above as the model grows.", "",
    ]
    return lines


def render() -> str:
    lines = [
        "# Detection quality", "",
        "Every number on this page comes from the JSON files in `benchmarks/results/`, written by",
        "one command (about two and a half hours on 2 CPU cores, most of it the three one-class "
        "runs; `--quick` is a 7-minute smoke run):", "",
        "```bash", "python benchmarks/run_quality.py      # then this page: "
        "python benchmarks/quality_docs.py", "```", "",
        "int8 figures are scored through `edge.scoring.Scorer` on the exported bundle (what the "
        "device runs); float figures come from the same bundle's `float_model.keras` with the "
        "same reconstruction-MSE score. The MNIST parts need `../shared/data/mnist-oneclass` "
        "(not part of the repository; the scripts exit with a message when it is absent).", "",
    ]
    oneclass = _load("mnist_oneclass.json")
    repro = _load("quality_mnist.json")
    if oneclass:
        lines += oneclass_section(oneclass)
        for file, option, why in OTHER_RUNS:
            other = _load(file)
            if other:
                lines += other_training_section(oneclass, other, file, option, why)
    lines += anogan_section(oneclass, repro)
    if repro:
        lines += mnist_repro_section(repro)
    casting = _load("quality_casting.json")
    if casting:
        lines += casting_section(casting)
    size = _load("quality_size.json")
    if size:
        lines += size_section(size)
    if NOTES_FILE.is_file():
        lines += [NOTES_FILE.read_text(encoding="utf-8").rstrip(), ""]
    return "\n".join(lines).rstrip() + "\n"


def main() -> int:
    DOC.write_text(render(), encoding="utf-8")
    print(f"wrote {DOC}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
