"""`weightpress compress` end to end, through a subprocess as a user runs it."""

import hashlib
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from coreml_oracle import decompressed_weights, linear_model, mixed_model, program_signature


def run_cli(*args, timeout=600):
    return subprocess.run([sys.executable, "-m", "weightpress.cli", *map(str, args)], capture_output=True,
                          text=True, timeout=timeout)


def tree_digest(path):
    h = hashlib.sha256()
    for root, dirs, files in sorted(os.walk(path)):
        dirs.sort()
        for name in sorted(files):
            full = os.path.join(root, name)
            h.update(full[len(path):].encode())
            with open(full, "rb") as f:
                h.update(f.read())
    return h.hexdigest()


@pytest.fixture(scope="module")
def packages(tmp_path_factory, ct):
    base = tmp_path_factory.mktemp("models")
    out = {}
    for target in ("iOS16", "iOS18"):
        model = mixed_model(getattr(ct.target, target))
        model.author = "weightpress tests"
        model.user_defined_metadata["origin"] = "mixed_model"
        path = str(base / f"mixed-{target}.mlpackage")
        model.save(path)
        out[target] = path
    return out


@pytest.mark.parametrize("path", ["streaming", "in-memory"])
def test_compress_matches_the_python_api(ct, packages, tmp_path, path):
    import coremltools.optimize.coreml as cto

    import weightpress.coreml as wpc

    src = packages["iOS18"]
    digest = tree_digest(src)
    out = tmp_path / "out.mlpackage"
    report = tmp_path / "report.json"
    r = run_cli("compress", src, "-o", out, "--palettize", 4, "--granularity", "per_grouped_channel",
                "--group-size", 16, "--weight-threshold", 10000, "--report", "--report-json", report, "--verify",
                *(["--in-memory"] if path == "in-memory" else []))
    assert r.returncode == 0, r.stderr
    assert "verified:" in r.stdout
    assert f"({path}, target iOS18)" in r.stdout  # the engine that ran
    assert "smaller" in r.stdout and "total SSE" in r.stdout
    assert tree_digest(src) == digest  # the input is never modified

    model = ct.models.MLModel(src, skip_model_load=True)
    config = cto.OptimizationConfig(global_config=cto.OpPalettizerConfig(
        nbits=4, granularity="per_grouped_channel", group_size=16, weight_threshold=10000))
    expected = wpc.palettize_weights(model, config)
    written = ct.models.MLModel(str(out), skip_model_load=True)
    assert program_signature(written) == program_signature(expected)
    a, b = decompressed_weights(expected), decompressed_weights(written)
    for key in a:
        np.testing.assert_array_equal(a[key].view(np.uint16), b[key].view(np.uint16))
    assert written.author == "weightpress tests" and written.user_defined_metadata["origin"] == "mixed_model"

    data = json.loads(report.read_text())
    names = {row["weight"] for row in data["layers"]}
    assert names == {"conv_weight_0", "linear_weight_0", "matmul_y_y_0", "matmul_yt_y_0"}  # > 10,000 elements
    assert all(row["psnr_db"] > 20 for row in data["layers"])
    assert data["size_out"] < data["size_in"]


def test_joint_chain_in_command_line_order(ct, packages, tmp_path):
    out = tmp_path / "joint.mlpackage"
    r = run_cli("compress", packages["iOS18"], "-o", out, "--prune", 0.5, "--palettize", 4)
    assert r.returncode == 0, r.stderr
    ops = {s[0] for s in program_signature(ct.models.MLModel(str(out), skip_model_load=True))}
    assert {"constexpr_lut_to_sparse", "constexpr_sparse_to_dense"} <= ops
    out2 = tmp_path / "joint2.mlpackage"
    r = run_cli("compress", packages["iOS18"], "-o", out2, "--quantize", "int8", "--prune", "0.3")
    assert r.returncode == 0, r.stderr
    ops = {s[0] for s in program_signature(ct.models.MLModel(str(out2), skip_model_load=True))}
    assert "constexpr_sparse_blockwise_shift_scale" in ops


def test_joint_chain_falls_back_within_the_budget_only(packages, tmp_path):
    r = run_cli("compress", packages["iOS18"], "-o", tmp_path / "o.mlpackage", "--prune", 0.5, "--palettize", 4,
                "--max-memory", "64M")
    msg = _error(r)
    assert "joint compression" in msg and "in-memory path would need about" in msg and "--max-memory" in msg
    r = run_cli("compress", packages["iOS18"], "-o", tmp_path / "o.mlpackage", "--prune", 0.5, "--palettize", 4,
                "--max-memory", "2G")
    assert r.returncode == 0, r.stderr
    assert "running in memory (estimated peak" in r.stderr


def test_streaming_budget_and_multifunction_errors(ct, packages, tmp_path):
    assert "over the" in _error(run_cli("compress", packages["iOS18"], "-o", tmp_path / "o.mlpackage",
                                        "--palettize", 4, "--max-memory", "100K"))
    from coremltools.models.utils import MultiFunctionDescriptor, save_multifunction

    desc = MultiFunctionDescriptor()
    desc.add_function(packages["iOS18"], src_function_name="main", target_function_name="a")
    desc.add_function(packages["iOS18"], src_function_name="main", target_function_name="b")
    desc.default_function_name = "a"
    multi = tmp_path / "multi.mlpackage"
    save_multifunction(desc, str(multi))
    r = run_cli("compress", multi, "-o", tmp_path / "o.mlpackage", "--palettize", 4)  # streamed, sharing kept
    assert r.returncode == 0, r.stderr
    msg = _error(run_cli("compress", multi, "-o", tmp_path / "j.mlpackage", "--prune", 0.5, "--palettize", 4))
    assert "functions" in msg and "multifunction" in msg and "streaming engine only" in msg


def test_config_files_apply_in_order(ct, packages, tmp_path):
    import coremltools.optimize.coreml as cto

    yaml = tmp_path / "quant.yaml"
    yaml.write_text("config_type: OpLinearQuantizerConfig\n"
                    "global_config:\n  mode: linear\n  dtype: uint4\n  granularity: per_block\n  block_size: 16\n"
                    "op_type_configs:\n  matmul: null\n")
    out = tmp_path / "cfg.mlpackage"
    r = run_cli("compress", packages["iOS18"], "-o", out, "--config", yaml)
    assert r.returncode == 0, r.stderr
    model = ct.models.MLModel(packages["iOS18"], skip_model_load=True)
    expected = cto.linear_quantize_weights(model, cto.OptimizationConfig.from_yaml(str(yaml)))
    written = ct.models.MLModel(str(out), skip_model_load=True)
    assert program_signature(written) == program_signature(expected)


def test_ios16_model_and_target(ct, packages, tmp_path):
    out = tmp_path / "q.mlpackage"
    r = run_cli("compress", packages["iOS16"], "-o", out, "--quantize", "int8")
    assert r.returncode == 0, r.stderr
    assert "constexpr_affine_dequantize" in {s[0] for s in program_signature(
        ct.models.MLModel(str(out), skip_model_load=True))}
    out2 = tmp_path / "q18.mlpackage"
    r = run_cli("compress", packages["iOS16"], "-o", out2, "--quantize", "int4", "--quantize-granularity",
                "per_block", "--target", "iOS18")
    assert r.returncode == 0, r.stderr
    written = ct.models.MLModel(str(out2), skip_model_load=True)
    assert written.get_spec().specificationVersion == 9
    assert "constexpr_blockwise_shift_scale" in {s[0] for s in program_signature(written)}


def test_ios15_model_is_raised_with_a_note(ct, tmp_path):
    src = tmp_path / "ios15.mlpackage"
    linear_model((np.random.default_rng(0).standard_normal((64, 256)) * 0.05).astype(np.float16),
                 ct.target.iOS15).save(str(src))
    out = tmp_path / "o.mlpackage"
    r = run_cli("compress", src, "-o", out, "--palettize", 2)
    assert r.returncode == 0, r.stderr
    assert "targets iOS15" in r.stderr and "iOS16" in r.stderr
    assert ct.models.MLModel(str(out), skip_model_load=True).get_spec().specificationVersion == 7


def _error(r):
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert "Traceback" not in r.stderr
    return lines[-1]


def test_error_paths(packages, tmp_path):
    src = packages["iOS18"]
    assert "no such file" in _error(run_cli("compress", tmp_path / "missing.mlpackage", "-o", tmp_path / "o.mlpackage",
                                             "--palettize", 4))
    not_pkg = tmp_path / "file.mlpackage"
    not_pkg.write_text("hello")
    assert "not an .mlpackage" in _error(run_cli("compress", not_pkg, "-o", tmp_path / "o.mlpackage", "--palettize", 4))
    nn = tmp_path / "model.mlmodel"
    nn.write_bytes(b"\x08\x04")
    assert "needs an ML program saved as an .mlpackage" in _error(
        run_cli("compress", nn, "-o", tmp_path / "o.mlpackage", "--palettize", 4))
    assert "at least one method" in _error(run_cli("compress", src, "-o", tmp_path / "o.mlpackage"))
    assert "no compressible weights" in _error(run_cli("compress", src, "-o", tmp_path / "o.mlpackage", "--palettize",
                                                       4, "--weight-threshold", 10 ** 9))
    # an option coremltools rejects: per_grouped_channel needs iOS18
    msg = _error(run_cli("compress", packages["iOS16"], "-o", tmp_path / "o.mlpackage", "--palettize", 4,
                         "--granularity", "per_grouped_channel"))
    assert "per_grouped_channel" in msg and "iOS18" in msg
    assert "cannot be lowered" in _error(run_cli("compress", src, "-o", tmp_path / "o.mlpackage", "--palettize", 4,
                                                 "--target", "iOS16"))
    assert "nbits" in _error(run_cli("compress", src, "-o", tmp_path / "o.mlpackage", "--palettize", 5))
    # coremltools 9.0 asserts on structured pruning of an already quantized weight
    msg = _error(run_cli("compress", src, "-o", tmp_path / "o.mlpackage", "--quantize", "int8", "--prune-n-m", "2:4"))
    assert "coremltools 9.0 cannot apply this joint step" in msg
    exists = tmp_path / "exists.mlpackage"
    exists.mkdir()
    assert "--force" in _error(run_cli("compress", src, "-o", exists, "--palettize", 4))
    assert not list(tmp_path.glob(".*weightpress-tmp*"))


@pytest.mark.parametrize("damage", ["truncate", "sentinel"])
def test_corrupt_weight_file(packages, tmp_path, damage):
    import shutil

    src = tmp_path / "broken.mlpackage"
    shutil.copytree(packages["iOS18"], src)
    weights = src / "Data" / "com.apple.CoreML" / "weights" / "weight.bin"
    data = bytearray(weights.read_bytes())
    if damage == "truncate":
        data = data[: len(data) // 2]
    else:
        data[64:68] = b"\0\0\0\0"
    weights.write_bytes(bytes(data))
    msg = _error(run_cli("compress", src, "-o", tmp_path / "o.mlpackage", "--palettize", 4))
    assert ("truncated" in msg) if damage == "truncate" else ("bad sentinel" in msg)
    assert not (tmp_path / "o.mlpackage").exists()


def test_force_overwrites_atomically(packages, tmp_path):
    out = tmp_path / "o.mlpackage"
    assert run_cli("compress", packages["iOS18"], "-o", out, "--quantize", "int8").returncode == 0
    r = run_cli("compress", packages["iOS18"], "-o", out, "--force", "--palettize", 2)
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o.mlpackage"]


@pytest.fixture(scope="module")
def big_fp32_package(ct, tmp_path_factory):
    """A long job: exact 8-bit k-means of a 4096x4096 fp32 weight (16.7M distinct values)
    takes several seconds."""
    from coremltools.converters.mil.mil import Builder as mb
    from coremltools.converters.mil.mil import types

    w = np.random.default_rng(0).standard_normal((4096, 4096)).astype(np.float32)

    @mb.program(input_specs=[mb.TensorSpec(shape=(1, 4096), dtype=types.fp32)], opset_version=ct.target.iOS18)
    def prog(x):
        return mb.linear(x=x, weight=w, name="big")

    src = tmp_path_factory.mktemp("big") / "big.mlpackage"
    ct.convert(prog, convert_to="mlprogram", minimum_deployment_target=ct.target.iOS18,
               compute_precision=ct.precision.FLOAT32).save(str(src))
    return src


def _interactive_signals():
    """A job started from a terminal: SIGINT at its default. A test runner started in the
    background (`.ci/run &`) hands its children SIGINT ignored, which Python keeps (as every
    POSIX program should), and Ctrl-C would then never reach the job under test."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _start_long_job(src, out):
    proc = subprocess.Popen([sys.executable, "-m", "weightpress.cli", "compress", str(src), "-o", str(out),
                             "--palettize", "8"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=_interactive_signals)
    line = proc.stderr.readline()
    while line and not line.startswith("compressing"):
        line = proc.stderr.readline()
    time.sleep(1.5)
    return proc


@pytest.mark.parametrize("sig,code", [(signal.SIGINT, 130), (signal.SIGTERM, 128 + signal.SIGTERM),
                                      (signal.SIGHUP, 128 + signal.SIGHUP)])
def test_signals_stop_quickly_and_leave_nothing(big_fp32_package, tmp_path, sig, code):
    """Ctrl-C, kill (SIGTERM) and a closed terminal (SIGHUP) all stop a long job within a
    couple of seconds, with 128 + the signal number, no output and no staged directory."""
    proc = _start_long_job(big_fp32_package, tmp_path / "o.mlpackage")
    sent = time.monotonic()
    proc.send_signal(sig)
    try:
        _, err = proc.communicate(timeout=60)  # (reading the pipes: a full pipe must not block the child)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGUSR1)  # the CLI dumps every thread's stack (faulthandler)
        time.sleep(2)
        proc.kill()
        _, err = proc.communicate()
        raise AssertionError(f"still running 60 s after the signal; stderr:\n{err[-8000:]}") from None
    stopped = time.monotonic() - sent
    assert proc.returncode == code, err
    assert stopped < 5, stopped
    assert list(tmp_path.iterdir()) == []


def test_staging_left_by_a_killed_run_is_removed_by_the_next(big_fp32_package, packages, tmp_path):
    proc = _start_long_job(big_fp32_package, tmp_path / "o.mlpackage")
    proc.kill()  # kill -9: no chance to clean up
    proc.wait(timeout=60)
    left = [p.name for p in tmp_path.iterdir()]
    assert len(left) == 1 and ".o.weightpress-tmp-" in left[0]  # what a power loss leaves
    live = tmp_path / f".o.weightpress-tmp-{os.getpid()}-0000abcd.mlpackage"  # another run, still alive
    live.mkdir()
    r = run_cli("compress", packages["iOS18"], "-o", tmp_path / "o.mlpackage", "--quantize", "int8")
    assert r.returncode == 0, r.stderr
    assert "left staged by an interrupted run" in r.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([live.name, "o.mlpackage"])


def _run_with_file_size_limit(limit, *args):
    import resource

    def limit_files():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG instead
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return subprocess.run([sys.executable, "-m", "weightpress.cli", *map(str, args)], capture_output=True,
                          text=True, timeout=600, preexec_fn=limit_files)


def test_a_full_disk_is_one_line_and_leaves_nothing(packages, tmp_path):
    r = _run_with_file_size_limit(64 << 10, "compress", packages["iOS18"], "-o", tmp_path / "o.mlpackage",
                                  "--quantize", "int8")
    msg = _error(r)
    assert "cannot write" in msg and "o.mlpackage" in msg and "MB free" in msg and "needs up to" in msg
    assert list(tmp_path.iterdir()) == []
    # a real full file system, where this machine lets the tests mount one
    mnt = tmp_path / "small"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mnt)], capture_output=True).returncode:
        return
    try:
        msg = _error(run_cli("compress", packages["iOS18"], "-o", mnt / "o.mlpackage", "--quantize", "int8"))
        assert "No space left on device" in msg and "MB free" in msg
        assert list(mnt.iterdir()) == []
    finally:
        subprocess.run(["umount", str(mnt)])
