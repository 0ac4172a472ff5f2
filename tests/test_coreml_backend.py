"""weightpress.coreml: coremltools' API on weightpress kernels (python/weightpress/coreml/).

Every test compresses the same model with coremltools alone and with weightpress and
compares: the programs op for op (types, names, input dtypes and shapes), and the weights
Core ML reconstructs (coremltools' decompress_weights) byte for byte where coremltools is
deterministic, by clustering objective elsewhere.
"""

import multiprocessing
import os

import numpy as np
import pytest

import weightpress.coreml as wpc
from coreml_oracle import decompressed_weights, linear_model, mixed_model, program_signature


@pytest.fixture(scope="module")
def cto(ct):
    import coremltools.optimize.coreml as cto

    return cto


@pytest.fixture(scope="module")
def models(ct):
    return {t: mixed_model(getattr(ct.target, t)) for t in ("iOS16", "iOS18", "iOS26")}


def sse(dense, original):
    return float(((dense.astype(np.float64) - original.astype(np.float64)) ** 2).sum())


def compress_both(cto, method, model, config, joint=False):
    theirs = getattr(cto, method)(model, config, joint_compression=joint)
    ours = getattr(wpc, method)(model, config, joint_compression=joint)
    assert not wpc.is_enabled()
    return theirs, ours


def assert_same_program(theirs, ours, exact=True, original=None):
    assert program_signature(ours) == program_signature(theirs)
    a, b = decompressed_weights(theirs), decompressed_weights(ours)
    assert a.keys() == b.keys()
    for key in a:
        if exact:
            np.testing.assert_array_equal(a[key].view(np.uint16), b[key].view(np.uint16), err_msg=key)
        else:
            assert sse(b[key], original[key]) <= sse(a[key], original[key]) * (1 + 1e-6), key


# deterministic in coremltools: kmeans1d (fp16 groups >= 10,000 elements), uniform, unique,
# quantization, pruning
DETERMINISTIC = {
    "iOS16": [
        ("palettize_weights", dict(mode="kmeans", nbits=4, weight_threshold=10000)),
        ("palettize_weights", dict(mode="uniform", nbits=6)),
        ("linear_quantize_weights", dict(dtype="int8")),
        ("linear_quantize_weights", dict(dtype="uint8", mode="linear", granularity="per_tensor")),
        ("prune_weights", dict(target_sparsity=0.7)),
        ("prune_weights", dict(threshold=0.04)),
    ],
    "iOS18": [
        ("palettize_weights", dict(mode="kmeans", nbits=3, weight_threshold=10000)),
        ("palettize_weights", dict(mode="uniform", nbits=4, granularity="per_grouped_channel", group_size=8)),
        ("linear_quantize_weights", dict(dtype="int4", granularity="per_block", block_size=16)),
        ("linear_quantize_weights", dict(dtype="uint4", mode="linear", granularity="per_channel")),
        ("prune_weights", dict(n_m_ratio=(2, 4))),
        ("prune_weights", dict(target_sparsity=0.5, block_size=2)),
        ("prune_weights", dict(n_m_ratio=(1, 4), dim=0)),
    ],
    "iOS26": [
        ("palettize_weights", dict(mode="kmeans", nbits=2, weight_threshold=10000)),
        ("linear_quantize_weights", dict(dtype="int8", granularity="per_block", block_size=32)),
        ("prune_weights", dict(target_sparsity=0.3)),
    ],
}


def op_config(cto, method, options):
    cls = {"palettize_weights": cto.OpPalettizerConfig, "linear_quantize_weights": cto.OpLinearQuantizerConfig}.get(method)
    if cls is None:
        cls = cto.OpThresholdPrunerConfig if "threshold" in options else cto.OpMagnitudePrunerConfig
    return cls(**options)


@pytest.mark.parametrize("target,method,options", [(t, m, o) for t, cases in DETERMINISTIC.items() for m, o in cases],
                         ids=lambda v: v if isinstance(v, str) else "-".join(f"{k}={x}" for k, x in v.items())
                         if isinstance(v, dict) else None)
def test_same_program_and_weights_as_coremltools(cto, models, target, method, options):
    config = cto.OptimizationConfig(global_config=op_config(cto, method, options))
    theirs, ours = compress_both(cto, method, models[target], config)
    assert_same_program(theirs, ours)


@pytest.mark.parametrize("options", [
    dict(nbits=4, granularity="per_grouped_channel", group_size=4),  # groups < 10,000: sklearn in coremltools
    dict(nbits=2, cluster_dim=2, granularity="per_grouped_channel", group_size=16),
])
def test_sklearn_paths_same_program_lower_error(cto, models, options):
    config = cto.OptimizationConfig(global_config=cto.OpPalettizerConfig(**options))
    theirs, ours = compress_both(cto, "palettize_weights", models["iOS18"], config)
    original = decompressed_weights(models["iOS18"])
    if options.get("cluster_dim", 1) == 1:
        assert_same_program(theirs, ours, exact=False, original=original)
    else:  # vector k-means has no exact algorithm: same program, error within a few percent
        assert program_signature(ours) == program_signature(theirs)
        a, b = decompressed_weights(theirs), decompressed_weights(ours)
        total_a = sum(sse(a[k], original[k]) for k in a)
        total_b = sum(sse(b[k], original[k]) for k in b)
        assert total_b <= total_a * 1.05


def test_fp32_program_exact_kmeans_beats_sklearn(ct, cto):
    model = mixed_model(ct.target.iOS18, dtype=np.float32)
    config = cto.OptimizationConfig(global_config=cto.OpPalettizerConfig(nbits=3))
    theirs, ours = compress_both(cto, "palettize_weights", model, config)
    assert_same_program(theirs, ours, exact=False, original=decompressed_weights(model))


def test_per_channel_scale_program(cto, models):
    config = cto.OptimizationConfig(global_config=cto.OpPalettizerConfig(
        nbits=4, enable_per_channel_scale=True, weight_threshold=10000))
    for target in ("iOS18", "iOS26"):
        theirs, ours = compress_both(cto, "palettize_weights", models[target], config)
        assert_same_program(theirs, ours)


def test_op_type_op_name_configs_and_threshold(cto, models):
    config = cto.OptimizationConfig(
        global_config=cto.OpLinearQuantizerConfig(dtype="int8", weight_threshold=4096),
        op_type_configs={"conv": cto.OpLinearQuantizerConfig(dtype="int4", granularity="per_block", block_size=8),
                         "matmul": None},
        op_name_configs={"matmul_x": cto.OpLinearQuantizerConfig(dtype="uint8", mode="linear")},
    )
    theirs, ours = compress_both(cto, "linear_quantize_weights", models["iOS18"], config)
    assert_same_program(theirs, ours)
    ops = {s[1][0][0]: s[0] for s in program_signature(ours)}
    assert ops["conv_weight_0_quantized"] == "constexpr_blockwise_shift_scale"
    assert ops["matmul_y_y_0"] == "const"  # op type None: not compressed
    # "more than N elements": 64*32*2*2 = 8192 > 4096 is compressed; the op-name config of
    # matmul_x (default threshold 2048) leaves its 64x32 = 2048-element const alone
    assert ops["deconv_weight_0_quantized"] == "constexpr_blockwise_shift_scale"
    assert ops["matmul_x_x_0"] == "const"
    config.op_name_configs["matmul_x"] = cto.OpLinearQuantizerConfig(dtype="uint8", mode="linear",
                                                                     weight_threshold=2047)
    theirs, ours = compress_both(cto, "linear_quantize_weights", models["iOS18"], config)
    assert_same_program(theirs, ours)
    assert "matmul_x_x_0_quantized" in {s[1][0][0] for s in program_signature(ours)}


@pytest.mark.parametrize("steps", [
    [("prune_weights", dict(target_sparsity=0.5)), ("palettize_weights", dict(nbits=4, weight_threshold=10000))],
    [("prune_weights", dict(n_m_ratio=(2, 4))), ("linear_quantize_weights", dict(dtype="int8"))],
    [("palettize_weights", dict(nbits=4, weight_threshold=10000)),
     ("linear_quantize_weights", dict(dtype="int8", granularity="per_tensor"))],
    [("linear_quantize_weights", dict(dtype="int8")), ("prune_weights", dict(target_sparsity=0.4))],
    [("palettize_weights", dict(nbits=4, weight_threshold=10000)), ("prune_weights", dict(target_sparsity=0.5))],
    [("prune_weights", dict(target_sparsity=0.5)), ("palettize_weights", dict(nbits=4, weight_threshold=10000)),
     ("linear_quantize_weights", dict(dtype="int8", granularity="per_tensor"))],
], ids=lambda steps: "->".join(m.split("_")[0] for m, _ in steps))
@pytest.mark.parametrize("target", ["iOS18", "iOS26"])
def test_joint_chains_match_coremltools(cto, models, steps, target):
    theirs = ours = models[target]
    for i, (method, options) in enumerate(steps):
        config = cto.OptimizationConfig(global_config=op_config(cto, method, options))
        try:
            theirs = getattr(cto, method)(theirs, config, joint_compression=i > 0)
        except ValueError as exc:
            # coremltools 9.0 fails on some iOS26 graphs (a quantized LUT of a rank-4 conv
            # weight): the same machinery fails the same way here
            with pytest.raises(ValueError, match=str(exc)[:60].replace("(", r"\(").replace(")", r"\)")):
                getattr(wpc, method)(ours, config, joint_compression=i > 0)
            assert target == "iOS26"
            return
        ours = getattr(wpc, method)(ours, config, joint_compression=i > 0)
    assert_same_program(theirs, ours)


def test_quantize_then_palettize_chain(cto, models):
    """coremltools clusters the integers with sklearn here: same program, objective not worse."""
    steps = [("linear_quantize_weights", dict(dtype="int8")), ("palettize_weights", dict(nbits=2))]
    theirs = ours = models["iOS18"]
    for i, (method, options) in enumerate(steps):
        config = cto.OptimizationConfig(global_config=op_config(cto, method, options))
        theirs = getattr(cto, method)(theirs, config, joint_compression=i > 0)
        ours = getattr(wpc, method)(ours, config, joint_compression=i > 0)
    assert program_signature(ours) == program_signature(theirs)
    original = decompressed_weights(models["iOS18"])
    a, b = decompressed_weights(theirs), decompressed_weights(ours)
    assert sum(sse(b[k], original[k]) for k in a) <= sum(sse(a[k], original[k]) for k in a) * 1.02


def test_ios15_model_is_raised_to_ios16(ct, cto):
    model = linear_model((np.random.default_rng(1).standard_normal((64, 256)) * 0.05).astype(np.float16),
                         ct.target.iOS15)
    assert model.get_spec().specificationVersion == 6
    config = cto.OptimizationConfig(global_config=cto.OpLinearQuantizerConfig(dtype="int8"))
    theirs, ours = compress_both(cto, "linear_quantize_weights", model, config)
    assert ours.get_spec().specificationVersion == 7
    assert_same_program(theirs, ours)


def test_nan_const_refused_by_name(ct, cto):
    w = (np.random.default_rng(2).standard_normal((64, 256)) * 0.05).astype(np.float16)
    w[3, 5] = np.nan
    model = linear_model(w, ct.target.iOS18)
    for method, cfg in [("palettize_weights", cto.OpPalettizerConfig(nbits=4)),
                        ("linear_quantize_weights", cto.OpLinearQuantizerConfig()),
                        ("prune_weights", cto.OpMagnitudePrunerConfig(target_sparsity=0.5))]:
        with pytest.raises(ValueError, match=r"const 'lin_weight_0' contains nan at flat index 773"):
            getattr(wpc, method)(model, cto.OptimizationConfig(global_config=cfg))
    assert not wpc.is_enabled()


def test_skips_like_coremltools(cto, models):
    """Indivisible groups and blocks are skipped by coremltools with a warning; same here."""
    for method, cfg in [("palettize_weights", cto.OpPalettizerConfig(nbits=4, granularity="per_grouped_channel",
                                                                    group_size=48)),
                        ("linear_quantize_weights", cto.OpLinearQuantizerConfig(dtype="int4", granularity="per_block",
                                                                               block_size=48))]:
        theirs, ours = compress_both(cto, method, models["iOS18"], cto.OptimizationConfig(global_config=cfg))
        assert program_signature(ours) == program_signature(theirs)
        assert any(s[0] == "const" and s[1][0][0] == "linear_weight_0" for s in program_signature(ours))


def test_save_reload_and_metadata(ct, cto, models, tmp_path):
    model = models["iOS18"]
    model.author = "weightpress tests"
    model.user_defined_metadata["origin"] = "mixed_model"
    config = cto.OptimizationConfig(global_config=cto.OpPalettizerConfig(nbits=4, weight_threshold=10000))
    ours = wpc.palettize_weights(model, config)
    path = str(tmp_path / "out.mlpackage")
    ours.save(path)
    back = ct.models.MLModel(path, skip_model_load=True)
    assert back.author == "weightpress tests"
    assert back.user_defined_metadata["origin"] == "mixed_model"
    a, b = decompressed_weights(ours), decompressed_weights(back)
    for key in a:
        np.testing.assert_array_equal(a[key].view(np.uint16), b[key].view(np.uint16))


# ---------------------------------------------------------------- enable() / disable()


def test_enable_routes_coremltools_own_functions(cto, models):
    from coremltools._deps import _kmeans1d
    from coremltools.optimize.coreml._quantization_passes import palettize_weights

    original_cluster = _kmeans1d.cluster
    original_compress = palettize_weights.__dict__["grouped_channelwise_compress"]
    config = cto.OptimizationConfig(global_config=cto.OpPalettizerConfig(nbits=4, granularity="per_grouped_channel",
                                                                         group_size=4))
    plain = cto.palettize_weights(models["iOS18"], config)
    with wpc.enabled():
        assert wpc.is_enabled()
        assert _kmeans1d.cluster is wpc._hooks.kmeans1d_cluster
        routed = cto.palettize_weights(models["iOS18"], config)  # coremltools' own entry point
    assert _kmeans1d.cluster is original_cluster
    assert palettize_weights.__dict__["grouped_channelwise_compress"] is original_compress
    ours = wpc.palettize_weights(models["iOS18"], config)
    a, b = decompressed_weights(routed), decompressed_weights(ours)
    for key in a:
        np.testing.assert_array_equal(a[key].view(np.uint16), b[key].view(np.uint16))
    # the sklearn path (groups of 4 channels) shows the exact kernel ran: never higher error, lower overall
    original = decompressed_weights(models["iOS18"])
    c = decompressed_weights(plain)
    assert sum(sse(b[k], original[k]) for k in b) < sum(sse(c[k], original[k]) for k in c)


def test_enable_disable_idempotent():
    wpc.enable()
    wpc.enable()
    assert wpc.is_enabled()
    wpc.disable()
    wpc.disable()
    assert not wpc.is_enabled()


def test_refuses_unverified_versions(monkeypatch, ct):
    monkeypatch.setattr(ct, "__version__", "8.3")
    with pytest.raises(wpc.UnsupportedVersionError, match="coremltools 9.0; found 8.3"):
        wpc.enable()
    assert not wpc.is_enabled()
    monkeypatch.setattr(ct, "__version__", "9.0")
    monkeypatch.setattr(np, "__version__", "1.26.4")
    with pytest.raises(wpc.UnsupportedVersionError, match="numpy 2.x"):
        wpc.enable()


# ---------------------------------------------------------------- the kmeans1d drop-in


def _original_cluster():
    from coremltools._deps import _kmeans1d

    assert not wpc.is_enabled()
    return _kmeans1d.cluster


@pytest.mark.parametrize("n,k,weighted", [(50, 4, False), (3000, 16, False), (3000, 16, True), (257, 256, False),
                                          (9, 9, True)])
def test_kmeans1d_distinct_values_identical(n, k, weighted):
    rng = np.random.default_rng(n + k)
    x = rng.standard_normal(n)
    w = rng.uniform(0.1, 3.0, n) if weighted else None
    theirs = _original_cluster()(x, k, weights=w)
    ours = wpc._hooks.kmeans1d_cluster(x, k, weights=w)
    np.testing.assert_array_equal(np.asarray(theirs.clusters), ours.clusters)
    np.testing.assert_array_equal(np.asarray(theirs.centroids), ours.centroids)


@pytest.mark.parametrize("weighted", [False, True])
def test_kmeans1d_duplicates_same_partition_within_ulp(weighted):
    rng = np.random.default_rng(3)
    x = np.round(rng.standard_normal(5000), 2)  # ~600 distinct values, many duplicates
    w = rng.uniform(0.5, 2.0, x.size) if weighted else None
    theirs = _original_cluster()(x, 16, weights=w)
    ours = wpc._hooks.kmeans1d_cluster(x, 16, weights=w)
    np.testing.assert_array_equal(np.asarray(theirs.clusters), ours.clusters)
    c0, c1 = np.asarray(theirs.centroids), ours.centroids
    if not weighted:  # kmeans1d's running mean over the raw elements, reproduced exactly
        np.testing.assert_array_equal(c0, c1)
    else:
        # kmeans1d orders equal values with an unstable std::sort, so which weight comes
        # first among duplicates (and with it the last bits of its running mean) is not
        # reproducible: within a few ulps
        ulps = np.abs(c0 - c1) / np.spacing(np.maximum(np.abs(c0), np.abs(c1)))
        assert ulps.max() <= 16, ulps.max()


def test_kmeans1d_more_clusters_than_distinct_values_is_kmeans1d():
    x = [1.0, 1.0, 2.0, 2.0, 2.0, 5.0]
    theirs = _original_cluster()(x, 5)
    ours = wpc._hooks.kmeans1d_cluster(x, 5)
    np.testing.assert_array_equal(np.asarray(theirs.clusters), np.asarray(ours.clusters))
    np.testing.assert_array_equal(np.asarray(theirs.centroids), np.asarray(ours.centroids))


def _forked_child(queue):
    from coremltools._deps import _kmeans1d

    queue.put((wpc.is_enabled(), _kmeans1d.cluster is wpc._hooks.kmeans1d_cluster))


def test_hooks_survive_fork():
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    with wpc.enabled():
        p = ctx.Process(target=_forked_child, args=(queue,))
        p.start()
        result = queue.get(timeout=60)
        p.join(60)
    assert result == (True, True)


@pytest.mark.skipif(os.environ.get("WEIGHTPRESS_SKIP_SPAWN") == "1", reason="spawn test disabled")
def test_optimize_torch_parallel_kmeans_spawned_workers_use_hooks():
    """optimize.torch's ParallelKMeans always spawns its workers: each is routed through a
    weightpress entry point that enables the hooks before the real work, and the palettizer's
    result equals the in-process (hooked) one."""
    torch = pytest.importorskip("torch")
    from coremltools.optimize.torch._utils.k_means import ParallelKMeans
    from coremltools.optimize.torch.palettization import PostTrainingPalettizer, PostTrainingPalettizerConfig

    with wpc.enabled():
        _, _, processes = ParallelKMeans._prepare_worker_processes(2)
        assert all(p._target is wpc._hooks._spawned_worker for p in processes)

        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Linear(64, 128), torch.nn.Linear(128, 32))
        config = PostTrainingPalettizerConfig.from_dict({"global_config": {"n_bits": 4, "granularity": "per_tensor"}})
        parallel = PostTrainingPalettizer(model, config).compress(num_kmeans_workers=2)
        serial = PostTrainingPalettizer(model, config).compress(num_kmeans_workers=1)
    for a, b in zip(parallel.parameters(), serial.parameters()):
        assert torch.equal(a, b)


# ---------------------------------------------------------------- every k-means entry point


@pytest.mark.parametrize("nbits", [2, 3, 4, 6])
def test_legacy_and_blockwise_palettization_agree_with_hooks(ct, nbits):
    # coremltools 9.0's own TestCompressionNumerical::test_tensorwise_equivalent_to_blockwise_zero
    # (legacy compress vs blockwise_compress with block size 0, KMEANS), with the hooks on: both
    # entry points now cluster exactly, so they give the same LUT and weights
    import warnings

    from coremltools.optimize.coreml._quantization_passes import palettize_weights

    import weightpress as wp

    data = np.random.default_rng(nbits).integers(-256, 256, size=(16, 16, 2, 2)).astype(np.float32)
    with wpc.enabled(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # compress is deprecated
        old = palettize_weights.compress(data, "KMEANS", nbits)
        new = palettize_weights.blockwise_compress(data, "KMEANS", nbits, block_sizes=[0] * data.ndim)
    np.testing.assert_allclose(np.sort(old.lut, axis=None), np.sort(new.lut, axis=None), atol=5e-5, rtol=1e-6)
    np.testing.assert_allclose(palettize_weights.decompress(old), palettize_weights.decompress(new), atol=5e-5,
                               rtol=1e-6)
    exact = wp.palettize(data, nbits)
    assert np.array_equal(np.sort(old.lut, axis=None), np.sort(exact.lut, axis=None))  # and both are optimal


@pytest.mark.parametrize("dtype,n", [(np.float16, 20000), (np.float16, 3000), (np.float32, 3000)])
def test_legacy_kmeans_lut(ct, dtype, n):
    from coremltools.models.neural_network import quantization_utils as qu

    w = (np.random.default_rng(n).standard_normal(n) * 0.05).astype(dtype)
    with wpc.enabled():
        lut, labels = qu._get_kmeans_lookup_table_and_weight(4, w)
    original_lut, original_labels = wpc._hooks._original(qu, "_get_kmeans_lookup_table_and_weight")(4, w)
    assert lut.shape == (16,) and labels.shape == (n,)
    if dtype == np.float16 and n >= 10_000:  # coremltools runs kmeans1d here: the same result
        assert np.array_equal(lut, original_lut) and np.array_equal(labels, original_labels)
    else:  # coremltools runs scikit-learn: ours is the optimum, never worse
        def sse(l, idx):
            return float(((np.asarray(l).reshape(-1)[idx] - w.astype(np.float64)) ** 2).sum())

        assert sse(lut, labels) <= sse(original_lut, original_labels) * (1 + 1e-12)


# Every call into a k-means in the installed coremltools (outside its tests), found by walking
# its syntax trees, with how weightpress handles it. A new or moved call site fails the test.
KMEANS_CALL_SITES = {
    ("models/neural_network/quantization_utils.py", "_get_kmeans_lookup_table_and_weight", "_kmeans1d.cluster"):
        "inside the replaced function",
    ("models/neural_network/quantization_utils.py", "_get_kmeans_lookup_table_and_weight", "KMeans"):
        "inside the replaced function (reached for vector LUTs only: coremltools' scikit-learn)",
    ("models/neural_network/quantization_utils.py", "_quantize_wp", "_get_kmeans_lookup_table_and_weight"):
        "routed: the module attribute is replaced",
    ("optimize/coreml/_quantization_passes.py", "palettize_weights._get_lut_and_indices.compress_kmeans",
     "_get_kmeans_lookup_table_and_weight"): "routed: the imported name is replaced",
    ("optimize/torch/_utils/k_means.py", "KMeans._cluster_weights_with_masking", "_kmeans1d.cluster"):
        "routed: kmeans1d.cluster",
    ("optimize/torch/_utils/k_means.py", "KMeans._cluster_weights_1d", "_kmeans1d.cluster"): "routed: kmeans1d.cluster",
    ("optimize/torch/_utils/k_means.py", "KMeans._cluster_weights_2d", "_EfficientKMeans"):
        "not routed: vector k-means (cluster_dim > 1) in torch",
    ("optimize/torch/palettization/_partitioner.py", "_Partitioner.get_partition_kmeans", "_EfficientKMeans"):
        "not routed: DKM training (differentiable k-means while fine-tuning)",
    ("optimize/torch/palettization/_efficient_kmeans.py", "_EfficientKMeans.fit", "_kmeans1d.cluster"):
        "routed: kmeans1d.cluster",
    ("optimize/torch/palettization/_efficient_kmeans.py", "_EfficientKMeans.fit", "sklearn.cluster.KMeans"):
        "not routed: DKM's vector k-means++ init on the CPU",
    ("optimize/torch/palettization/_efficient_kmeans.py", "_EfficientKMeans.fit", "sklearn.cluster.MiniBatchKMeans"):
        "not routed: DKM's vector k-means++ init on the CPU",
}
KMEANS_NAMES = {"_kmeans1d.cluster", "_get_kmeans_lookup_table_and_weight", "KMeans", "MiniBatchKMeans",
                "sklearn.cluster.KMeans", "sklearn.cluster.MiniBatchKMeans", "_EfficientKMeans"}


def _kmeans_references(root):
    """(file, enclosing function qualname, name) of every call of -- or reference to -- a
    k-means implementation in coremltools' own code."""
    import ast
    import warnings

    found = set()
    for folder, _, files in os.walk(root):
        if os.sep + "test" in folder:
            continue
        for name in files:
            if not name.endswith(".py") or name.startswith("test_"):
                continue
            path = os.path.join(folder, name)
            with open(path, encoding="utf-8") as f, warnings.catch_warnings():
                warnings.simplefilter("ignore")  # coremltools' own invalid escape sequences
                tree = ast.parse(f.read())

            def dotted(node):
                if isinstance(node, ast.Name):
                    return node.id
                if isinstance(node, ast.Attribute):
                    inner = dotted(node.value)
                    return f"{inner}.{node.attr}" if inner else None
                return None

            def visit(node, scope):
                for child in ast.iter_child_nodes(node):
                    if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                        visit(child, scope + [child.name])
                        continue
                    target = None
                    if isinstance(child, ast.Call):
                        target = dotted(child.func)
                    elif isinstance(child, ast.Assign):  # clustering_method = sklearn.cluster.KMeans
                        target = dotted(child.value)
                    if target in KMEANS_NAMES and scope:
                        found.add((os.path.relpath(path, root).replace(os.sep, "/"), ".".join(scope), target))
                    visit(child, scope)

            visit(tree, [])
    return found


def test_every_kmeans_call_site_in_coremltools_is_known(ct):
    root = os.path.dirname(ct.__file__)
    found = _kmeans_references(root)
    unknown = found - set(KMEANS_CALL_SITES)
    gone = set(KMEANS_CALL_SITES) - found
    assert not unknown, f"k-means call sites weightpress does not know about (route them or list them): {unknown}"
    assert not gone, f"listed k-means call sites no longer in coremltools: {gone}"


def test_routed_entry_points_are_replaced_while_enabled(ct):
    from coremltools._deps import _kmeans1d
    from coremltools.models.neural_network import quantization_utils
    from coremltools.optimize.coreml import _quantization_passes

    with wpc.enabled():
        assert _kmeans1d.cluster is wpc._hooks.kmeans1d_cluster
        assert quantization_utils._get_kmeans_lookup_table_and_weight is wpc._hooks.kmeans_lookup_table_and_weight
        assert _quantization_passes._get_kmeans_lookup_table_and_weight is wpc._hooks.kmeans_lookup_table_and_weight
    assert quantization_utils._get_kmeans_lookup_table_and_weight is not wpc._hooks.kmeans_lookup_table_and_weight
    assert _quantization_passes._get_kmeans_lookup_table_and_weight is \
        quantization_utils._get_kmeans_lookup_table_and_weight
