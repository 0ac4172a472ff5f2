"""Apple's Core AI runtime decodes every format weightpress writes as weightpress decodes it.

A tiny torch model (a Linear and a 3x3 Conv2d, fp32) is converted to an .aimodel with
coreai-torch. For each compressed form of one of its weights, two programs are built from it:
one with the weight's constant replaced by the Core AI ops weightpress emits
(weightpress.aimodel.emit: lut_to_dense, blockwise_shift_scale, the bitmask sparse ops, the
sub-byte data packed by weightpress), one with it replaced by weightpress's own decompress()
as a dense constant. Both run on coreai-core's CPU runtime on the same inputs; their outputs
must agree to float rounding (the runtime may fuse dequantization into the matmul and sum in
another order). This is the first check of weightpress's decoding by an Apple runtime rather
than by its own decoder or coremltools' Python one.
"""

import shutil

import numpy as np
import pytest

import weightpress as wp

coreai = pytest.importorskip("coreai", reason="coreai-core (Linux x86-64 and macOS wheels only)")
coreai_torch = pytest.importorskip("coreai_torch")

from weightpress.aimodel import program as P  # noqa: E402


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    """(.aimodel path, inputs, {name: weight}) of a Linear(64 -> 48) after a 3x3 conv."""
    import warnings

    import torch

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            g = torch.Generator().manual_seed(0)
            self.conv = torch.nn.Conv2d(8, 16, 3, padding=1, bias=False)
            self.fc = torch.nn.Linear(64, 48, bias=False)
            with torch.no_grad():
                self.conv.weight.copy_(torch.randn(16, 8, 3, 3, generator=g) * 0.1)
                w = torch.randn(48, 64, generator=g) * 0.05
                w[3, 5] = 0.6  # an outlier
                self.fc.weight.copy_(w)

        def forward(self, x):
            y = torch.relu(self.conv(x))  # (n, 16, 2, 2) -> 64 features
            return self.fc(y.reshape(y.shape[0], -1))

    net = Net().eval()
    x = torch.randn(4, 8, 2, 2, generator=torch.Generator().manual_seed(1))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        exported = torch.export.export(net, (x,)).run_decompositions(coreai_torch.get_decomp_table())
        converter = coreai_torch.TorchConverter(mode=coreai_torch.TorchConverter.Mode.RELEASE)
        converter.add_exported_program(exported, input_names=["x"], output_names=["y"])
        prog = converter.to_coreai()
    path = tmp_path_factory.mktemp("coreai") / "net.aimodel"
    prog.save_asset(path)
    weights = {"fc": net.fc.weight.detach().numpy(), "conv": net.conv.weight.detach().numpy()}
    return path, {"x": x.numpy()}, weights


def _swap(src, dst, weight, build):
    """dst: src with the constant holding `weight` replaced by build(emitter)."""
    prog = P.load(src)
    matches = [op for op in P.constants(prog) if tuple(op.result.type.shape) == weight.shape]
    assert len(matches) == 1, [str(op.result.type) for op in P.constants(prog)]
    np.testing.assert_array_equal(P.read(matches[0]), weight)  # read back as converted
    P.replace(matches[0], build)
    P.save(prog, dst)
    return dst


def _check(model, tmp_path, name, r, emit):
    src, inputs, weights = model
    compressed = _swap(src, tmp_path / "compressed.aimodel", weights[name], lambda e: emit(e, r))
    reference = _swap(src, tmp_path / "reference.aimodel", weights[name], lambda e: e.dense(r.decompress()))
    got, want = P.run(compressed, inputs)["y"], P.run(reference, inputs)["y"]
    scale = float(np.abs(want).max())
    np.testing.assert_allclose(got, want, rtol=0, atol=4e-6 * scale)
    return got, want


QUANTIZE = [(dtype, mode, kw) for dtype in ("int4", "uint4", "int8", "uint8")
            for mode in ("linear_symmetric", "linear")
            for kw in ({"granularity": "per_tensor"}, {"granularity": "per_channel"},
                       {"granularity": "per_block", "block_size": 16})]


@pytest.mark.parametrize("dtype, mode, kw", QUANTIZE,
                         ids=[f"{d}-{m}-{k['granularity']}" for d, m, k in QUANTIZE])
def test_quantization(model, tmp_path, dtype, mode, kw):
    r = wp.quantize(model[2]["fc"], dtype, mode=mode, **kw)
    _check(model, tmp_path, "fc", r, lambda e, r: e.quantize(r))


PALETTIZE = [dict(nbits=n) for n in (1, 2, 3, 4, 6, 8)] + [
    dict(nbits=4, granularity="per_grouped_channel", group_size=16),
    dict(nbits=3, granularity="per_grouped_channel", group_size=1),
    dict(nbits=4, cluster_dim=2), dict(nbits=2, cluster_dim=4),
    dict(nbits=4, mode="uniform"), dict(nbits=None, mode="unique", source="few")]


@pytest.mark.parametrize("kw", PALETTIZE, ids=lambda kw: "-".join(f"{k}{v}" for k, v in kw.items()))
def test_palettization(model, tmp_path, kw):
    kw = dict(kw)
    src, inputs, weights = model
    w = weights["fc"]
    if kw.pop("source", None) == "few":  # unique: the model first gets a weight of few distinct values
        w = (np.round(w * 20) / 20).astype(np.float32)
        model = (_swap(src, tmp_path / "few.aimodel", weights["fc"], lambda e: e.dense(w)), inputs, dict(weights, fc=w))
    nbits = kw.pop("nbits")
    r = wp.palettize(w, nbits, **kw)
    got, want = _check(model, tmp_path, "fc", r, lambda e, r: e.palettize(r))
    np.testing.assert_array_equal(got, want)  # a LUT decodes to exactly the same values


@pytest.mark.parametrize("kw", [dict(target_sparsity=0.5), dict(n_m_ratio=(2, 4)), dict(threshold=0.03),
                                dict(target_sparsity=0.75, block_size=2)],
                         ids=["magnitude", "n2m4", "threshold", "block2"])
def test_pruning(model, tmp_path, kw):
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        r = wp.prune(model[2]["fc"], **kw)
    got, want = _check(model, tmp_path, "fc", r, lambda e, r: e.prune(r))
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("compress", [
    lambda w: wp.palettize(w, 3, granularity="per_grouped_channel", group_size=4),
    lambda w: wp.quantize(w, "int4", granularity="per_block", block_size=(1, 4, 0, 0)),
    lambda w: wp.quantize(w, "uint8", mode="linear"),
    lambda w: wp.prune(w, n_m_ratio=(1, 2)),
], ids=["lut3-g4", "int4-b4", "uint8-channel", "n1m2"])
def test_conv_weight(model, tmp_path, compress):
    r = compress(model[2]["conv"])
    verb = "palettize" if hasattr(r, "lut") else "quantize" if hasattr(r, "scale") else "prune"
    _check(model, tmp_path, "conv", r, lambda e, r: getattr(e, verb)(r))


def test_the_swap_reaches_the_output(model, tmp_path):
    """The check can fail: another weight in the same place changes what the runtime computes."""
    src, inputs, weights = model
    before = P.run(src, inputs)["y"]
    moved = _swap(src, tmp_path / "moved.aimodel", weights["fc"], lambda e: e.dense(weights["fc"] * np.float32(1.01)))
    after = P.run(moved, inputs)["y"]
    assert np.abs(after - before).max() > 1e-3 * np.abs(before).max()
    np.testing.assert_allclose(after, before * 1.01, rtol=1e-5, atol=1e-6)


def test_save_is_atomic_and_replaces(model, tmp_path):
    src = model[0]
    dst = tmp_path / "out.aimodel"
    shutil.copytree(src, dst)
    prog = P.load(src)
    P.save(prog, dst)
    assert sorted(p.name for p in dst.iterdir()) == ["main.hash", "main.mlirb", "metadata.json"]
    assert [p.name for p in tmp_path.iterdir()] == ["out.aimodel"]  # no staging left behind


# ---------------------------------------------------------------- weightpress compress IN.aimodel


def _cli(*args):
    import subprocess
    import sys

    return subprocess.run([sys.executable, "-m", "weightpress.cli", *map(str, args)], capture_output=True, text=True,
                          timeout=600)


@pytest.mark.parametrize("method, expected", [
    (["--quantize", "int4", "--quantize-granularity", "per_block", "--block-size", 4],
     lambda w: wp.quantize(w, "int4", granularity="per_block", block_size=(1, 4) + (0,) * (w.ndim - 2))),
    (["--quantize", "uint8", "--quantize-mode", "linear", "--quantize-granularity", "per_channel"],
     lambda w: wp.quantize(w, "uint8", mode="linear", granularity="per_channel")),
    (["--palettize", 3, "--granularity", "per_grouped_channel", "--group-size", 8],
     lambda w: wp.palettize(w, 3, granularity="per_grouped_channel", group_size=8)),
    (["--prune", 0.5], lambda w: wp.prune(w, target_sparsity=0.5)),
], ids=["int4-b4", "uint8-channel", "lut3-g8", "prune50"])
def test_compress_an_aimodel(model, tmp_path, method, expected):
    """compress IN.aimodel -o OUT.aimodel: both weights (the Linear through a transpose into a
    matmul, the conv) compressed with the axes coreai-opt infers, and the runtime's output
    equals the uncompressed program's with the library's results swapped in."""
    src, inputs, weights = model
    out = tmp_path / "out.aimodel"
    r = _cli("compress", src, "-o", out, *method, "--report")
    assert r.returncode == 0, r.stderr
    assert "2 weights compressed" in r.stdout and "(aimodel, target Core AI)" in r.stdout, r.stdout
    reference = src
    for name in ("conv", "fc"):  # the library's result for each weight, as a dense constant
        dense = expected(weights[name]).decompress()
        reference = _swap(reference, tmp_path / f"ref-{name}.aimodel", weights[name], lambda e, d=dense: e.dense(d))
    got, want = P.run(out, inputs)["y"], P.run(reference, inputs)["y"]
    np.testing.assert_allclose(got, want, rtol=0, atol=4e-6 * float(np.abs(want).max()))
    assert (out / "main.mlirb").stat().st_size < (src / "main.mlirb").stat().st_size


@pytest.mark.parametrize("args, message", [
    (["-o", "{tmp}/out.mlpackage", "--quantize", "int8"], "the output must be an .aimodel"),
    (["-o", "{tmp}/out.aimodel", "--quantize", "int8", "--palettize", 4], "one method for now"),
    (["-o", "{tmp}/out.aimodel", "--quantize", "int8", "--in-memory"], "does not take --in-memory"),
    (["-o", "{tmp}/out.aimodel", "--palettize", 4, "--calibrate", "minilm"], "does not take --calibrate"),
    (["-o", "{tmp}/out.aimodel", "--quantize", "int8", "--weight-threshold", 100000], "no compressible weights"),
])
def test_bad_aimodel_jobs_are_one_line_and_write_nothing(model, tmp_path, args, message):
    out_dir = tmp_path / "outs"
    out_dir.mkdir()
    r = _cli("compress", model[0], *[str(a).replace("{tmp}", str(out_dir)) for a in args])
    assert r.returncode == 2, r.stderr
    lines = [line for line in r.stderr.strip().splitlines() if not line.startswith(("compressing ", "ODIE"))]
    assert len(lines) == 1 and message in lines[0] and "Traceback" not in r.stderr, r.stderr
    assert list(out_dir.iterdir()) == []


def test_an_aimodel_without_its_program_is_refused(tmp_path):
    broken = tmp_path / "broken.aimodel"
    broken.mkdir()
    (broken / "metadata.json").write_text("{}")
    r = _cli("compress", broken, "-o", tmp_path / "o.aimodel", "--quantize", "int8")
    assert r.returncode == 2 and "not an .aimodel (no main.mlirb)" in r.stderr, r.stderr
    assert not (tmp_path / "o.aimodel").exists()
