"""Every copy of the multiversioned loops (x86-64-v4, x86-64-v3, the baseline; multiversion.h)
gives the same bytes: the same work runs in child processes with WEIGHTPRESS_ISA capping the
level, and every output's digest must match the native run's. Covers each multiversioned
function: the workload of tests/kernel_digests.py (packing and unpacking at every width,
quantization: quantize_run, extrema_of, short_blocks; pruning: magnitude and threshold masks,
block norms, n:m ranks on fp16 and fp32 bits; every palettization mode and the k-means DP,
tie-heavy inputs included; sse_curve)."""

import json
import os
import subprocess
import sys

import pytest

from kernel_digests import compare

WORKLOAD = os.path.join(os.path.dirname(os.path.abspath(__file__)), "kernel_digests.py")


def _run(isa):
    env = dict(os.environ)
    env.pop("WEIGHTPRESS_ISA", None)
    if isa:
        env["WEIGHTPRESS_ISA"] = isa
    r = subprocess.run([sys.executable, WORKLOAD], capture_output=True, text=True, env=env, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads(r.stdout)


def test_every_instruction_set_level_gives_the_same_bytes():
    native = _run(None)
    levels = {"x86-64-v4": 4, "x86-64-v3": 3, "baseline": 0}
    native_level = levels[native["isa"]]
    tried = 0
    for cap in ("x86-64-v3", "baseline"):
        if levels[cap] >= native_level:
            continue  # the CPU runs this level natively: nothing lower to compare
        capped = _run(cap)
        assert capped["isa"] == cap  # the cap took effect: a different copy ran
        mismatched = compare(native, capped)
        assert not mismatched, f"{cap} differs from {native['isa']}: {mismatched}"
        tried += 1
    if native_level == 0:
        pytest.skip("one build only on this platform (no multiversioned copies to compare)")
    assert tried >= 1


def test_the_cap_never_raises_the_level():
    native = _run(None)
    assert _run("x86-64-v4")["isa"] == native["isa"]
    assert _run("baseline")["isa"] == "baseline"


# The features of each x86-64 level (the psABI), as Linux names them in /proc/cpuinfo; the
# kernel lists a feature only where the OS also saves its registers.
LEVEL_FLAGS = {
    3: {"pni", "ssse3", "cx16", "sse4_1", "sse4_2", "popcnt", "lahf_lm",  # x86-64-v2
        "avx", "avx2", "bmi1", "bmi2", "f16c", "fma", "abm", "movbe", "xsave"},
    4: {"avx512f", "avx512dq", "avx512cd", "avx512bw", "avx512vl"},
}


def test_detected_level_matches_the_cpu_flags():
    """isa.cpp reads the level feature by feature from CPUID and XGETBV (no compiler level
    strings, which clang 14 lacks): it must agree with the kernel's own reading."""
    import platform

    if platform.system() != "Linux" or platform.machine() != "x86_64":
        pytest.skip("x86-64 Linux only (elsewhere one baseline build)")
    with open("/proc/cpuinfo") as f:
        flags = set(next(line for line in f if line.startswith("flags")).split(":", 1)[1].split())
    expected = "baseline"
    if LEVEL_FLAGS[3] <= flags:
        expected = "x86-64-v4" if LEVEL_FLAGS[4] <= flags else "x86-64-v3"
    assert _run(None)["isa"] == expected


def test_digests_equal_the_committed_reference():
    """The workload's outputs equal tests/data/kernel_digests.json, made once by the GCC 12
    x86-64 build (`python tests/kernel_digests.py > tests/data/kernel_digests.json`). On any
    other compiler, C++ library, instruction set or platform (the clang + libc++ wheel, the
    macOS and arm64 jobs of the GitHub workflow) this is the identity check. A deliberate
    change of a kernel's output regenerates the file in the same commit; so does a numpy whose
    random streams moved (the lock pins numpy)."""
    from kernel_digests import REFERENCE

    with open(REFERENCE) as f:
        reference = json.load(f)
    different = compare(reference, _run(None))
    assert not different, f"differs from the {reference['platform']} reference: {different}"
