"""Mixed-bit planning (weightpress.plan, `weightpress plan`, `compress --recipe`): the size
model against what compress writes, the solver against brute force, the error model against
the kernels, recipe files, coremltools YAML export, ml-stable-diffusion import, bad input."""

import itertools
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from weightpress.errors import ConfigError
from weightpress.plan import Recipe, parse_options, plan
from weightpress.plan.options import Option
from weightpress.plan.solver import Item, hull, solve


def run_cli(*args, timeout=600):
    return subprocess.run([sys.executable, "-m", "weightpress.cli", *map(str, args)], capture_output=True,
                          text=True, timeout=timeout)


# ---------------------------------------------------------------- solver


def _brute_force(items, budget):
    best = None
    for combo in itertools.product(*[range(len(it.options)) for it in items]):
        size = sum(it.options[c][0] for it, c in zip(items, combo))
        if size <= budget:
            err = sum(it.options[c][1] for it, c in zip(items, combo))
            if best is None or err < best:
                best = err
    return best


def test_hull_keeps_the_lower_convex_frontier():
    options = [(10, 5.0), (20, 2.0), (30, 1.5), (25, 3.0), (40, 0.2), (20, 2.5)]
    # (25, 3.0) and (20, 2.5) are dominated, (30, 1.5) lies above the chord 20 -> 40
    assert [options[i] for i in hull(options)] == [(10, 5.0), (20, 2.0), (40, 0.2)]


def test_solver_against_brute_force():
    """Within budget always; never worse than the optimum plus the largest single hull
    step (the Lagrangian bound); and optimal on most random instances (few weights with
    few options are its worst case: a real model has hundreds of weights)."""
    rng = np.random.default_rng(7)
    optimal = 0
    trials = 300
    for _ in range(trials):
        items = []
        for _ in range(int(rng.integers(2, 6))):
            n = int(rng.integers(1, 5))
            sizes = np.sort(rng.integers(1, 60, n))
            errors = np.sort(rng.uniform(0, 10, n))[::-1]
            items.append(Item(tuple((int(b), float(e)) for b, e in zip(sizes, errors))))
        low = sum(min(b for b, _ in it.options) for it in items)
        high = sum(max(b for b, _ in it.options) for it in items)
        budget = int(rng.integers(low, high + 1))
        chosen = solve(items, budget)
        size = sum(it.options[c][0] for it, c in zip(items, chosen))
        err = sum(it.options[c][1] for it, c in zip(items, chosen))
        best = _brute_force(items, budget)
        assert size <= budget
        step = max(max(e for _, e in it.options) - min(e for _, e in it.options) for it in items)
        assert err <= best + step + 1e-9
        optimal += err <= best + 1e-9
    assert optimal >= 0.8 * trials, f"optimal on {optimal} of {trials}"  # 257 of 300 when written


def test_solver_refuses_a_budget_below_the_smallest_options():
    with pytest.raises(ValueError, match="smallest options"):
        solve([Item(((10, 1.0), (20, 0.5)))], 5)


# ---------------------------------------------------------------- options and error model


def test_options_parse_and_refuse_unknown():
    opts = parse_options("palettize:2,4;granularity:per_tensor,per_grouped_channel:16;quantize:int8,int4/32;keep")
    labels = [o.label for o in opts]
    assert sorted(labels) == sorted(["palettize:2", "palettize:2/g16", "palettize:4", "palettize:4/g16",
                                     "quantize:int8", "quantize:int4/b32", "keep"])
    assert [Option.from_label(label).label for label in labels] == labels
    for bad in ("palettize:5", "quantize:int3", "frobnicate:1", "granularity:per_grouped_channel:0", ""):
        with pytest.raises(ConfigError):
            parse_options(bad)
    # recipe labels pass the same checks
    for bad in ("palettize:5", "palettize:4/g0", "quantize:int4/b0", "quantize:int3", "palettize:x", 5):
        with pytest.raises(ConfigError, match="unknown option"):
            Option.from_label(bad)


def test_errors_are_the_kernels_sse():
    """Every candidate's SSE is what compressing with that option gives: palettization the
    optimal k-means objective (the exact DP of every width), quantization the kernel's."""
    from weightpress import palettize, quantize, sse_curve

    rng = np.random.default_rng(3)
    weights = {"a": (rng.standard_normal((64, 256)) * 0.05).astype(np.float16),
               "b": (rng.standard_normal((32, 96)) * 2).astype(np.float32)}
    result = plan(weights, target_bpw=5, weight_threshold=0,
                  options="palettize:2,4;granularity:per_tensor,per_grouped_channel:16;quantize:int8,int4/32;keep")
    for a in result.analyses:
        w = weights[a.name]
        by_label = {c.option.label: c for c in a.candidates}
        full = sse_curve(w, 4)
        grouped = sse_curve(w, 4, granularity="per_grouped_channel", group_size=16, channel_axis=0)
        for b in (2, 4):
            assert by_label[f"palettize:{b}"].sse == pytest.approx(full[(1 << b) - 1], rel=1e-9)
            assert by_label[f"palettize:{b}/g16"].sse == pytest.approx(grouped[(1 << b) - 1], rel=1e-9)
            # the stored LUT rounds the optimal centroids to the weight's dtype: close to it
            assert palettize(w, b).sse == pytest.approx(full[(1 << b) - 1], rel=0.05)
        assert by_label["quantize:int8"].sse == pytest.approx(quantize(w, "int8", granularity="per_channel").sse,
                                                              rel=1e-12)
        assert by_label["quantize:int4/b32"].sse == pytest.approx(
            quantize(w, "int4", granularity="per_block", block_size=32).sse, rel=1e-12)
        assert by_label["keep"].sse == 0.0
        # relative sensitivity: the SSE over the weight's energy
        energy = float(np.sum(w.astype(np.float64) ** 2))
        assert by_label["quantize:int8"].error == pytest.approx(by_label["quantize:int8"].sse / energy)


def test_plan_spends_the_budget_where_it_saves_most_error():
    """A weight that clusters into 4 values loses nothing at 2 bits; noise needs more: the plan
    gives the bits to the noise, where a uniform setting wastes them."""
    rng = np.random.default_rng(0)
    easy = rng.choice(np.array([-0.5, -0.1, 0.2, 0.7], dtype=np.float16), size=(128, 256))
    hard = (rng.standard_normal((128, 256)) * 0.1).astype(np.float16)
    result = plan({"easy": easy, "hard": hard}, target_bpw=4.1, weight_threshold=0,
                  options="palettize:2,4,6;granularity:per_tensor")
    assert result.recipe.weights["easy"].option.label == "palettize:2"
    assert result.recipe.weights["hard"].option.label == "palettize:6"
    assert result.bits_per_weight <= 4.1
    # the trade-off curve: more bytes, less error
    errors = [p.error for p in result.curve]
    assert all(b <= a + 1e-12 for a, b in zip(errors, errors[1:]))


def test_min_psnr_bisects_the_curve():
    rng = np.random.default_rng(1)
    weights = {f"w{i}": (rng.standard_normal((64, 64)) * (i + 1)).astype(np.float16) for i in range(4)}
    calls = []

    def quality(recipe):  # PSNR grows with the bytes spent, as a forward pass would show
        calls.append(recipe)
        return {"psnr": recipe.predicted["bits_per_weight"] * 5.0, "cosine": 1.0}

    result = plan(weights, min_psnr=20.0, quality=quality, weight_threshold=0, curve_points=16, sensitivity="relative")
    assert result.quality["psnr"] >= 20.0
    smaller = [p for p in result.curve if p.bits_per_weight * 5.0 >= 20.0]
    assert result.recipe.predicted["bits_per_weight"] == pytest.approx(min(p.bits_per_weight for p in smaller))
    assert len(calls) <= 6  # a bisection, not a sweep
    with pytest.raises(ConfigError, match="even the largest"):
        plan(weights, min_psnr=500.0, quality=quality, weight_threshold=0, sensitivity="relative")


def test_plan_api_refuses_bad_targets():
    w = {"a": np.ones((64, 64), np.float16) * np.linspace(-1, 1, 64, dtype=np.float16)}
    with pytest.raises(ConfigError, match="below the smallest"):
        plan(w, target_bpw=0.5, weight_threshold=0)
    with pytest.raises(ConfigError, match="above what the largest"):
        plan(w, target_bpw=17, weight_threshold=0)
    with pytest.raises(ConfigError, match="exactly one"):
        plan(w, target_bpw=4, max_size=100, weight_threshold=0)
    with pytest.raises(ConfigError, match="sensitivity"):
        plan(w, target_bpw=4, sensitivity="loud", weight_threshold=0)
    with pytest.raises(ConfigError, match="activation statistics"):
        plan(w, target_bpw=4, sensitivity="activations", weight_threshold=0)
    with pytest.raises(ConfigError, match="no weight to plan"):
        plan({"small": w["a"][:32, :32]}, target_bpw=4)  # 1024 elements: under the default threshold
    with pytest.raises(ValueError, match="NaN|finite"):
        plan({"a": np.full((64, 64), np.nan, np.float16)}, target_bpw=4, weight_threshold=0)


def test_activation_sensitivity_weights_input_channels():
    """Errors on input channels that see large activations count more: with one channel
    carrying all the activation energy, only that channel's error matters."""
    rng = np.random.default_rng(2)
    w = (rng.standard_normal((32, 64)) * 0.1).astype(np.float16)
    columns = np.zeros(64)
    columns[5] = 1.0
    result = plan({"w": w}, target_bpw=8.5, sensitivity="activations", column_weights={"w": columns},
                  weight_threshold=0, options="quantize:int8,int4/32")
    from weightpress import quantize

    c = {x.option.label: x for x in result.analyses[0].candidates}
    dense = quantize(w, "int8", granularity="per_channel").decompress().astype(np.float64)
    expected = float(np.sum((dense[:, 5] - w[:, 5].astype(np.float64)) ** 2))
    assert c["quantize:int8"].sse == pytest.approx(expected)


# ---------------------------------------------------------------- packages: size model and round trip


@pytest.fixture(scope="module")
def mixed_package(tmp_path_factory, ct):
    from coreml_oracle import mixed_model

    path = str(tmp_path_factory.mktemp("plan") / "mixed.mlpackage")
    mixed_model(ct.target.iOS18).save(path)
    return path


def _weight_bin(package):
    return os.path.getsize(os.path.join(package, "Data", "com.apple.CoreML", "weights", "weight.bin"))


def _info(package):
    r = run_cli("info", package, "--json")
    assert r.returncode == 0, r.stderr
    return {w["name"]: w for w in json.loads(r.stdout)["weights"]}


@pytest.mark.parametrize("target", ["3", "4.5", "6"])
def test_recipe_round_trip_on_minilm(minilm_package, tmp_path, target):
    """plan -> compress --recipe -> info: every weight stored as planned, weight.bin within 1%
    of the predicted size (the planned bytes count everything stored)."""
    recipe_path = tmp_path / "recipe.json"
    r = run_cli("plan", minilm_package, "--target-bpw", target, "-o", recipe_path)
    assert r.returncode == 0, r.stderr
    assert "bits per weight" in r.stdout and "choices:" in r.stdout
    recipe = Recipe.load(str(recipe_path))
    assert recipe.predicted["bits_per_weight"] <= float(target)
    out = tmp_path / "out.mlpackage"
    r = run_cli("compress", minilm_package, "-o", out, "--recipe", recipe_path)
    assert r.returncode == 0, r.stderr
    predicted = recipe.predicted["weight_file_bytes"]
    assert abs(_weight_bin(str(out)) - predicted) <= 0.01 * predicted
    info = _info(str(out))
    for name, choice in recipe.weights.items():
        stored = info[name]
        option = choice.option
        if option.method == "keep":
            assert stored["method"] is None, name
        elif option.method == "palettize":
            assert (stored["method"], stored["nbits"], stored["granularity"]) == \
                ("palettize", option.nbits, option.granularity), name
            if option.granularity == "per_grouped_channel":
                assert stored["group_size"] == option.group_size
        else:
            assert (stored["method"], stored["nbits"]) == ("quantize", option.nbits), name


def test_size_model_is_exact_per_option(mixed_package, tmp_path):
    """Each option alone over the mixed model (every consumer kind): weight.bin as predicted,
    to the byte but for the last blob's padding."""
    for label in ("palettize:4", "palettize:2/g16", "quantize:int8", "quantize:int4/b32", "keep"):
        recipe_path = tmp_path / f"{label.replace(':', '_').replace('/', '_')}.json"
        if label == "keep":  # one option everywhere: nothing to plan, said so
            r = run_cli("plan", mixed_package, "--max-size", "100M", "--options", "keep", "--weight-threshold", 0,
                        "-o", recipe_path)
            assert r.returncode == 2 and "nothing to trade off" in r.stderr, r.stderr
            continue
        # the first point of the trade-off curve stores every weight the option applies to with it
        result = plan(mixed_package, target_bpw=15.9, weight_threshold=0, options=f"{_options_string(label)};keep")
        recipe = result.curve[0].recipe
        assert label in recipe.counts(), recipe.counts()
        recipe.save(str(recipe_path))
        out = tmp_path / f"out-{recipe_path.stem}.mlpackage"
        r = run_cli("compress", mixed_package, "-o", out, "--recipe", recipe_path)
        assert r.returncode == 0, r.stderr
        # exact but for the file's last blob, which is not padded to the 64-byte alignment
        assert 0 <= recipe.predicted["weight_file_bytes"] - _weight_bin(str(out)) < 64, label


def _options_string(label):
    option = Option.from_label(label)
    if option.method == "palettize":
        gran = "per_tensor" if option.granularity == "per_tensor" else f"per_grouped_channel:{option.group_size}"
        return f"palettize:{option.nbits};granularity:{gran}"
    return f"quantize:{label.split(':', 1)[1].replace('/b', '/')}"


def test_recipe_file_round_trip(tmp_path):
    rng = np.random.default_rng(5)
    weights = {f"layer{i}_weight": (rng.standard_normal((64, 128)) * 0.1).astype(np.float16) for i in range(3)}
    result = plan(weights, target_bpw=4, weight_threshold=0)
    path = str(tmp_path / "r.json")
    result.recipe.save(path)
    loaded = Recipe.load(path)
    assert loaded.to_dict() == json.loads(json.dumps(result.recipe.to_dict()))
    assert {n: c.option for n, c in loaded.weights.items()} == {n: c.option for n, c in result.recipe.weights.items()}
    config = loaded.to_config()
    assert set(config.op_name_configs) == {n for n, c in loaded.weights.items() if c.option.method != "keep"}


def test_export_yaml_applies_in_coremltools(ct, mixed_package, tmp_path):
    """The recipe as coremltools OptimizationConfig YAML: coremltools loads every file and,
    applied with its own palettize_weights / linear_quantize_weights, compresses exactly the
    consts the recipe names with the planned method."""
    import coremltools.optimize.coreml as cto

    recipe_path = tmp_path / "r.json"
    yaml_dir = tmp_path / "yaml"
    r = run_cli("plan", mixed_package, "--target-bpw", 5, "--weight-threshold", 0, "--options",
                "palettize:4;granularity:per_tensor;quantize:int8;keep", "-o", recipe_path, "--export-yaml", yaml_dir)
    assert r.returncode == 0, r.stderr
    recipe = Recipe.load(str(recipe_path))
    methods = {c.option.method for c in recipe.weights.values()} - {"keep"}
    files = sorted(os.listdir(yaml_dir))
    assert files == sorted(f"{m}.yaml" for m in methods)
    model = ct.models.MLModel(mixed_package, skip_model_load=True)
    for name in files:
        config = cto.OptimizationConfig.from_yaml(str(yaml_dir / name))
        planned = {n for n, c in recipe.weights.items() if c.option.method == name[:-5]}
        assert set(config.op_name_configs) == planned
        apply = cto.palettize_weights if name.startswith("palettize") else cto.linear_quantize_weights
        model = apply(model, config)
    info_path = tmp_path / "ct.mlpackage"
    model.save(str(info_path))
    info = _info(str(info_path))
    for name, choice in recipe.weights.items():
        expected = None if choice.option.method == "keep" else choice.option.method
        assert info[name]["method"] == expected, name


def test_mbp_recipe_import(ct, tmp_path):
    """ml-stable-diffusion mixed-bit recipes (torch module -> nbits) map to consts by
    coremltools' naming rule; modules that map to nothing are listed, never dropped."""
    import torch

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.block = torch.nn.Sequential(torch.nn.Linear(64, 128), torch.nn.ReLU(), torch.nn.Linear(128, 64))

        def forward(self, x):
            return self.block(x)

    torch.manual_seed(0)
    net = Net().eval()
    traced = torch.jit.trace(net, torch.zeros(1, 64))
    model = ct.convert(traced, inputs=[ct.TensorType(shape=(1, 64))], convert_to="mlprogram",
                       minimum_deployment_target=ct.target.iOS18)
    package = str(tmp_path / "net.mlpackage")
    model.save(package)
    mbp = tmp_path / "mbp.json"
    mbp.write_text(json.dumps({"recipes": {"recipe_4.50_bit_mixedpalette": {
        "block.0": 4, "block.2": 16, "missing.layer": 6}}}))
    recipe_path = tmp_path / "r.json"
    r = run_cli("plan", package, "--from-mbp", mbp, "-o", recipe_path)
    assert r.returncode == 0, r.stderr
    assert "missing.layer" in r.stderr and "1 modules" in r.stderr
    recipe = Recipe.load(str(recipe_path))
    labels = {n: c.option.label for n, c in recipe.weights.items()}
    assert sorted(labels.values()) == ["keep", "palettize:4"]
    assert any(n.startswith("block_0_weight") for n, label in labels.items() if label == "palettize:4")
    out = tmp_path / "out.mlpackage"
    r = run_cli("compress", package, "-o", out, "--recipe", recipe_path)
    assert r.returncode == 0, r.stderr
    info = _info(str(out))
    assert [info[n]["nbits"] for n, label in labels.items() if label == "palettize:4"] == [4]
    # a width palettization does not have, and a file with several recipes and no choice
    mbp.write_text(json.dumps({"recipes": {"a": {"block.0": 5}}}))
    r = run_cli("plan", package, "--from-mbp", mbp, "-o", recipe_path)
    assert r.returncode == 2 and "5 bits" in r.stderr
    mbp.write_text(json.dumps({"recipes": {"a": {"block.0": 4}, "b": {"block.0": 2}}}))
    r = run_cli("plan", package, "--from-mbp", mbp, "-o", tmp_path / "none.json")
    assert r.returncode == 2 and "choose one of" in r.stderr and not (tmp_path / "none.json").exists()


# ---------------------------------------------------------------- bad input


def test_bad_input_is_one_error_line_and_nothing_written(mixed_package, tmp_path):
    out = tmp_path / "r.json"
    for args, message in [
        (("--target-bpw", 0.2), "below the smallest"),
        (("--target-bpw", 40), "above what the largest"),
        (("--target-bpw", 4, "--options", "palettize:5"), "--options"),
        (("--target-bpw", 4, "--options", "zip:9"), "zip"),
        (("--max-size", "1K"), "below the smallest"),
        ((), "give a target"),
    ]:
        r = run_cli("plan", mixed_package, *args, "--weight-threshold", 0, "-o", out)
        assert r.returncode == 2, (args, r.stderr)
        assert message in r.stderr, (args, r.stderr)
        assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
        assert not out.exists()
    r = run_cli("plan", tmp_path / "missing.mlpackage", "--target-bpw", 4)
    assert r.returncode == 2 and "Traceback" not in r.stderr


def test_compress_refuses_bad_recipes(mixed_package, minilm_package, tmp_path):
    good = tmp_path / "good.json"
    r = run_cli("plan", mixed_package, "--target-bpw", 5, "--weight-threshold", 0, "-o", good)
    assert r.returncode == 0, r.stderr
    data = json.loads(good.read_text())
    cases = {}
    cases["malformed.json"] = "{not json"
    cases["not-a-recipe.json"] = json.dumps({"weights": {}})
    bad_option = json.loads(json.dumps(data))
    next(iter(bad_option["weights"].values()))["option"] = "palettize:5"
    cases["bad-option.json"] = json.dumps(bad_option)
    other_shape = json.loads(json.dumps(data))
    next(iter(other_shape["weights"].values()))["shape"] = [7, 7]
    cases["other-shape.json"] = json.dumps(other_shape)
    out = tmp_path / "out.mlpackage"
    for name, text in cases.items():
        path = tmp_path / name
        path.write_text(text)
        r = run_cli("compress", mixed_package, "-o", out, "--recipe", path)
        assert r.returncode == 2, (name, r.stderr)
        assert "Traceback" not in r.stderr and "--recipe" in r.stderr, (name, r.stderr)
        assert not out.exists(), name
    # a recipe planned for another model names consts this one lacks
    r = run_cli("compress", minilm_package, "-o", out, "--recipe", good)
    assert r.returncode == 2 and "does not have" in r.stderr and not out.exists()
    # a recipe cannot be mixed with other methods
    r = run_cli("compress", mixed_package, "-o", out, "--recipe", good, "--palettize", 4)
    assert r.returncode == 2 and not out.exists()


# ---------------------------------------------------------------- quality with torch


def test_planned_minilm_beats_uniform_at_the_same_size(minilm_package):
    """With the torch check: the plan at the size of uniform 4-bit per-tensor palettization
    keeps MiniLM's sentence embeddings closer to the original (held-out sentences)."""
    pytest.importorskip("torch")
    from weightpress.minilm import HELD_OUT
    from weightpress.plan.quality import TorchQuality
    from weightpress.plan.sources import package_sources

    from weightpress.minilm import quality_inputs
    from weightpress.plan.recipe import Choice

    with package_sources(minilm_package, 2048) as (sources, _, _, _):
        weights = {s.name: s.read().copy() for s in sources}
        axes = {s.name: (s.in_axis, s.out_axis) for s in sources}
    model, inputs = quality_inputs(HELD_OUT)
    check = TorchQuality(model, inputs, weights, axes)
    first = plan(minilm_package, target_bpw=4)
    uniform = {}
    for a in first.analyses:
        c = next(c for c in a.candidates if c.option.label == "palettize:4")
        uniform[a.name] = Choice(c.option, a.shape, a.dtype, c.bytes.total, c.error)
    uniform_bytes = sum(c.bytes for c in uniform.values())
    planned = plan(minilm_package, target_bpw=8.0 * uniform_bytes / first.elements)
    assert planned.bytes <= uniform_bytes
    q_uniform, q_planned = check(Recipe(uniform)), check(planned.recipe)
    assert q_planned["cosine"] > q_uniform["cosine"]
    assert q_planned["psnr"] > q_uniform["psnr"]


def test_calibrated_sensitivity_measures_a_slope_per_weight_and_method():
    """With a quality check, each weight's error slope per method is measured (one pass per
    weight and method) and decides: a weight whose outputs suffer from quantization gets
    palettized even where quantization's SSE is lower."""
    from weightpress.plan.quality import calibrate

    rng = np.random.default_rng(9)
    weights = {"fragile": (rng.standard_normal((64, 256)) * 0.1).astype(np.float16),
               "robust": (rng.standard_normal((64, 256)) * 0.1).astype(np.float16)}
    slopes = {("fragile", "palettize"): 1.0, ("fragile", "quantize"): 1000.0,
              ("robust", "palettize"): 1.0, ("robust", "quantize"): 1.0}
    energy = {n: float(np.sum(w.astype(np.float64) ** 2)) for n, w in weights.items()}
    from weightpress.plan.quality import decompressed

    calls = []

    def quality(recipe):  # an exactly linear model: MSE = sum of slope * relative error
        calls.append(recipe)
        dense = decompressed(recipe, weights, {n: (1, 0) for n in weights})
        mse = sum(slopes[(n, recipe.weights[n].option.method)]
                  * float(np.sum((d.astype(np.float64) - weights[n].astype(np.float64)) ** 2)) / energy[n]
                  for n, d in dense.items())
        return {"psnr": 100.0 - mse, "cosine": 1.0, "mse": mse}

    options = "palettize:4,6;granularity:per_tensor;quantize:int8;keep"
    result = plan(weights, target_bpw=8.3, quality=quality, weight_threshold=0, options=options)
    assert result.recipe.sensitivity == "calibrated"  # the default with a quality check
    assert len(calls) == 2 * 2 + 1  # two probes per weight, one check of the chosen recipe
    measured = calibrate(quality, result.analyses)
    for key, slope in slopes.items():
        # (the probe's SSE is the optimum with float64 centroids; the stored LUT is fp16)
        assert measured[key] == pytest.approx(slope, rel=1e-3)
    by_name = {a.name: {c.option.label: c for c in a.candidates} for a in result.analyses}
    assert by_name["fragile"]["quantize:int8"].sse < by_name["fragile"]["palettize:6"].sse
    assert result.recipe.weights["fragile"].option.method == "palettize"
    # without the measured slopes the data-free model picks int8 for the fragile weight too
    relative = plan(weights, target_bpw=8.3, weight_threshold=0, options=options)
    assert relative.recipe.weights["fragile"].option.label == "quantize:int8"


def test_python_api_with_a_torch_model_and_sample_inputs():
    """plan(arrays, torch_model=..., sample_inputs=...): the weights map to the model's
    parameters by name, the slopes are measured (calibrated is the default) and the chosen
    recipe's output PSNR is reported."""
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(64, 128), torch.nn.ReLU(), torch.nn.Linear(128, 32)).eval()
    weights = {f"{i}_weight": p.detach().numpy().astype(np.float16)
               for i, p in ((0, model[0].weight), (2, model[2].weight))}
    with torch.no_grad():  # the model carries the fp16 weights the "package" holds
        model[0].weight.copy_(torch.from_numpy(weights["0_weight"].astype(np.float32)))
        model[2].weight.copy_(torch.from_numpy(weights["2_weight"].astype(np.float32)))
    result = plan(weights, target_bpw=5, torch_model=model, sample_inputs=torch.randn(16, 64), weight_threshold=0)
    assert result.recipe.sensitivity == "calibrated"
    assert 10 < result.quality["psnr"] < 200 and 0.9 < result.quality["cosine"] <= 1.0
    with pytest.raises(ConfigError, match="go together"):
        plan(weights, target_bpw=5, torch_model=model, weight_threshold=0)
    unmatched = {"other_weight": weights["0_weight"]}
    with pytest.raises(ConfigError, match="no torch parameter"):
        plan(unmatched, target_bpw=5, torch_model=model, sample_inputs=torch.randn(4, 64), weight_threshold=0)


def test_cli_torch_check_on_minilm(minilm_package, tmp_path):
    """--torch-model minilm: the calibrated plan and its torch check, end to end."""
    out = tmp_path / "r.json"
    r = run_cli("plan", minilm_package, "--target-bpw", 4, "--torch-model", "minilm", "-o", out)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stderr.splitlines() == [f"wrote {out}"]  # nothing from torch, coremltools or tokenizers
    psnr = float(r.stdout.split("torch check: PSNR ")[1].split(" dB")[0])
    assert psnr > 33.0  # uniform 4-bit per-tensor reaches about 32 dB on these sentences
    assert Recipe.load(str(out)).sensitivity == "calibrated"
