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


def _isa(cap):
    """The level the extension runs at under WEIGHTPRESS_ISA=cap (None: uncapped)."""
    env = dict(os.environ)
    env.pop("WEIGHTPRESS_ISA", None)
    if cap:
        env["WEIGHTPRESS_ISA"] = cap
    r = subprocess.run([sys.executable, "-c", "from weightpress import _core; print(_core.isa())"], capture_output=True,
                       text=True, env=env, timeout=120)
    assert r.returncode == 0, r.stderr[-3000:]
    return r.stdout.strip()


def test_every_instruction_set_level_gives_the_same_bytes():
    levels = {"x86-64-v4": 4, "x86-64-v3": 3, "baseline": 0}
    if levels[_isa(None)] == 0:  # before the workload: emulated, one run of it takes minutes
        pytest.skip("one build only on this platform (no multiversioned copies to compare)")
    native = _run(None)
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
    assert tried >= 1


def test_the_cap_never_raises_the_level():
    native = _isa(None)
    assert _isa("x86-64-v4") == native
    assert _isa("baseline") == "baseline"


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


# The steering functions' bits on this platform: fixed by IEEE-754 arithmetic alone, so every
# platform must compute exactly these (the arm64 and macOS runs check it).
STEERING_BITS = [("log", 3.0, 0.0, "0x1.193ea7aad030bp+0"), ("log", 1e-300, 0.0, "-0x1.5963447f87fb5p+9"),
                 ("log", 0.7, 0.0, "-0x1.6d3c324e13f4fp-2"), ("log", 12345.678, 0.0, "0x1.2d79559791e31p+3"),
                 ("log2", 65536.0, 0.0, "0x1.0000000000000p+4"), ("log2", 1000.0, 0.0, "0x1.3ee7b471b3a95p+3"),
                 ("pow", 1.6, 3.0, "0x1.0624dd2f1a9fcp+2"), ("pow", 0.3, 2.7, "0x1.3d6858f50590ep-5"),
                 ("pow", 17.0, -1.5, "0x1.d37e9adf3779dp-7")]


def test_steering_math_has_fixed_bits_and_libm_accuracy():
    """log, log2 and pow steer the k-means searches (steering_math.h). They are computed from
    +, -, *, / and exact scalings only, so their bits are the same on every platform, unlike
    libm's (glibc and Apple's differ in the last bit); they agree with libm to rounding."""
    import math

    from weightpress import _core

    for fn, x, a, bits in STEERING_BITS:
        assert _core.steering_math(fn, x, a).hex() == bits, (fn, x, a)
    for x in [2.0 ** e * m for e in range(-1000, 1000, 7) for m in (1.0, 1.3, 1.9)]:
        assert _core.steering_math("log", x) == pytest.approx(math.log(x), rel=4e-16, abs=1e-300)
    for n in range(2, 70_000, 7):
        assert _core.steering_math("log2", float(n)) == pytest.approx(math.log2(n), rel=4e-16)
    for x in (0.001, 0.37, 0.99, 1.0, 1.01, 2.5, 9.0, 640.0):
        for a in (-2.5, 0.5, 1.0, 1.7, 3.0, 7.9):
            assert _core.steering_math("pow", x, a) == pytest.approx(x ** a, rel=2e-14)
    with pytest.raises(ValueError, match="fn must be"):
        _core.steering_math("exp", 1.0)


@pytest.mark.parametrize("ulps", [3, -3, 40])
def test_outputs_do_not_depend_on_the_steering_bits(ulps):
    """Every result of the kernel workload (the windowed solver and sse_curve on large inputs
    included) is unchanged when the steering functions are off by a few ulps, as another
    platform's libm could be: they only guide the penalty search and the DP's strategy, whose
    results are decided by the exact arithmetic (docs/kmeans1d.md)."""
    import math

    native = _run(None)
    env = dict(os.environ, WEIGHTPRESS_STEERING_ULPS=str(ulps))
    env.pop("WEIGHTPRESS_ISA", None)
    probe = subprocess.run([sys.executable, "-c", "from weightpress import _core; print(_core.steering_math('log', 3.0))"],
                           capture_output=True, text=True, env=env, timeout=60)
    moved = float.fromhex(STEERING_BITS[0][3])
    for _ in range(abs(ulps)):
        moved = math.nextafter(moved, math.copysign(math.inf, ulps))
    assert float(probe.stdout) == moved  # the perturbation took effect
    r = subprocess.run([sys.executable, WORKLOAD], capture_output=True, text=True, env=env, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert compare(native, json.loads(r.stdout)) == []
