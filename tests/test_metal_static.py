"""Static guards for kernel code that a host C++ compiler would not catch (issue: Metal)."""

import os
import re

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KERNELS = os.path.join(ROOT, "cpp", "include", "weightpress", "kernels")
METAL = os.path.join(ROOT, "metal")


def _code(path):
    """The file without comments, and for portable.h without its non-Metal branch."""
    with open(path) as f:
        text = f.read()
    text = re.sub(r"//[^\n]*", "", text)
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    if os.path.basename(path) == "portable.h":
        text = text.split("#else")[0]
    return text


def _kernel_files():
    files = [os.path.join(KERNELS, n) for n in sorted(os.listdir(KERNELS)) if n.endswith(".h")]
    for d in (METAL, os.path.join(METAL, "unshipped")):
        files += [os.path.join(d, n) for n in sorted(os.listdir(d)) if n.endswith(".metal")]
    assert len(files) >= 10
    return files


def test_no_double_no_std_no_fast_math_no_allocation():
    for path in _kernel_files():
        code = _code(path)
        name = os.path.relpath(path, ROOT)
        assert not re.search(r"\bdouble\b", code), f"{name}: double (Metal has none)"
        assert "std::" not in code, f"{name}: std:: in kernel code"
        assert not re.search(r"fast_math|fast::|-ffast-math|fastMath", code), f"{name}: fast math"
        assert not re.search(r"\b(new|delete|malloc|free|throw|try|catch)\b", code), f"{name}: allocation/exceptions"
        includes = re.findall(r'#\s*include\s*([<"][^>"]+[>"])', code)
        for inc in includes:
            assert inc == "<metal_stdlib>" or inc.startswith('"'), f"{name}: includes {inc}"


def test_host_structs_have_asserted_sizes():
    code = _code(os.path.join(KERNELS, "params.h"))
    structs = re.findall(r"struct (\w+) \{", code)
    assert structs
    for s in structs:
        assert re.search(rf"static_assert\(sizeof\({s}\) == \d+", code), f"{s} has no size assertion"
        body = code.split(f"struct {s} {{")[1].split("};")[0]
        assert all(t == "uint32_t" for t in re.findall(r"^\s*(\w+) \w+;", body, re.M)), f"{s}: 4-byte scalars only"


def test_every_shipped_kernel_is_called_by_the_host_and_no_other():
    """The host looks pipelines up by name: every name it asks for must be a shipped wrapper
    (else a run on a Mac fails at the lookup), and every shipped wrapper must be called (else
    it belongs in metal/unshipped/)."""
    with open(os.path.join(METAL, "metal_backend.mm")) as f:
        requested = set(re.findall(r'(?:pipeline|run_1d)\("(\w+)"', f.read()))
    shipped = set()
    for n in os.listdir(METAL):
        if n.endswith(".metal"):
            with open(os.path.join(METAL, n)) as f:
                shipped |= set(re.findall(r"kernel void wp_(\w+)\(", f.read()))
    assert requested == shipped, (sorted(requested - shipped), sorted(shipped - requested))
    assert "nearest_centroid" not in shipped  # kept in metal/unshipped/ (metal/README.md)


def test_metal_library_compiled_without_fast_math():
    with open(os.path.join(METAL, "metal_backend.mm")) as f:
        host = f.read()
    assert "MTLMathModeSafe" in host and "fastMathEnabled = NO" in host
    with open(os.path.join(ROOT, "CMakeLists.txt")) as f:
        cmake = f.read()
    assert "if(APPLE)" in cmake and "amalgamate.py" in cmake and "-ffp-contract=off" in cmake


def test_the_shim_is_never_shipped():
    with open(os.path.join(ROOT, "pyproject.toml")) as f:
        assert 'wheel.packages = ["python/weightpress"]' in f.read()
    for root, _, files in os.walk(os.path.join(ROOT, "python")):
        assert "metal_stdlib" not in files
