"""Fuzz targets: the parts of weightpress that read untrusted bytes.

Each target takes one input (bytes), builds the file(s) it describes in a scratch directory,
and runs the reader on it. The contract: every input ends in success or in one
WeightpressError (the CLI turns that into one line and exit code 2). Any other exception, a
crash, a hang or an unbounded allocation is a finding (run.py gives libFuzzer the time and
memory limits that turn the last two into findings too).

    manifest   Manifest.json of an otherwise valid package -> open_package
    weights    weight.bin -> every header and blob, as check_weights walks them
    spec       the model spec protobuf, with a valid weight.bin -> the streaming compressor
    yaml       an OptimizationConfig YAML -> MethodConfig.from_yaml
    recipe     a weightpress plan recipe (JSON) -> Recipe.load, checked against the seed
               package and turned into its config, as compress --recipe does
    package    a whole package: (manifest, spec, weight.bin) split from one input -> the
               streaming compressor end to end; no output may appear on failure
"""

from __future__ import annotations

import os
import shutil
import struct
import tempfile

SEED_PACKAGE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "seed.mlpackage")
SPEC = os.path.join("Data", "com.apple.CoreML", "model.mlmodel")
WEIGHTS = os.path.join("Data", "com.apple.CoreML", "weights", "weight.bin")
MANIFEST = "Manifest.json"


class Scratch:
    """A fresh copy of the seed package per input (removed after), with parts replaced."""

    def __init__(self):
        self.root = tempfile.mkdtemp(prefix="wp-fuzz-")
        self.package = os.path.join(self.root, "in.mlpackage")
        shutil.copytree(SEED_PACKAGE, self.package)

    def write(self, relative, data: bytes):
        with open(os.path.join(self.package, relative), "wb") as f:
            f.write(data)

    def close(self):
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _expected(strict=False):
    """What a target lets pass: one WeightpressError (nothing when strict, so that a
    regression test can check an input is refused with one)."""
    from weightpress.errors import WeightpressError

    return () if strict else (WeightpressError,)


def manifest(data: bytes, strict: bool = False) -> None:
    from weightpress.mlpackage.package import open_package

    with Scratch() as s:
        s.write(MANIFEST, data)
        try:
            open_package(s.package)
        except _expected(strict):
            pass


def weights(data: bytes, strict: bool = False) -> None:
    from weightpress.mlpackage.package import check_weights, load_spec, open_package
    from weightpress.mlpackage.weight_file import WeightFileReader

    with Scratch() as s:
        s.write(WEIGHTS, data)
        try:
            package = open_package(s.package)
            check_weights(package, load_spec(package))
            with WeightFileReader(package.weight_file) as reader:
                for blob in reader.walk():
                    reader.read_bytes(blob)
        except _expected(strict):
            pass


def spec(data: bytes, strict: bool = False) -> None:
    with Scratch() as s:
        s.write(SPEC, data)
        _compress(s, quantize=len(data) % 2 == 0, strict=strict)


def _read_file(data: bytes, name: str, read, strict: bool) -> None:
    """Writes the input as `name` beside a fresh seed package and runs read(path, package)."""
    with Scratch() as s:
        path = os.path.join(s.root, name)
        with open(path, "wb") as f:
            f.write(data)
        try:
            read(path, s.package)
        except _expected(strict):
            pass


def yaml(data: bytes, strict: bool = False) -> None:
    from weightpress.config import MethodConfig

    _read_file(data, "config.yaml", lambda path, _: MethodConfig.from_yaml(path), strict)


def recipe(data: bytes, strict: bool = False) -> None:
    from weightpress.plan.recipe import Recipe
    from weightpress.plan.sources import package_consts

    def read(path, package):
        r = Recipe.load(path)
        r.check_against(package_consts(package, 0), package)
        r.to_config()

    _read_file(data, "recipe.json", read, strict)


def split_package(data: bytes):
    """An input holding three parts: u32 lengths of the manifest and the spec, then manifest,
    spec and weight.bin bytes (missing parts keep the seed's)."""
    if len(data) < 8:
        return None, None, data
    m, p = struct.unpack_from("<II", data)
    body = data[8:]
    m = min(m, len(body))
    p = min(p, len(body) - m)
    return body[:m] or None, body[m:m + p] or None, body[m + p:] or None


def join_package(manifest_bytes: bytes, spec_bytes: bytes, weight_bytes: bytes) -> bytes:
    return struct.pack("<II", len(manifest_bytes), len(spec_bytes)) + manifest_bytes + spec_bytes + weight_bytes


def package(data: bytes, strict: bool = False) -> None:
    parts = split_package(data)
    with Scratch() as s:
        for relative, part in zip((MANIFEST, SPEC, WEIGHTS), parts):
            if part is not None:
                s.write(relative, part)
        _compress(s, quantize=len(data) % 2 == 0, strict=strict)


def _compress(s: Scratch, quantize: bool, strict: bool = False) -> None:
    """The streaming compressor with --verify on the scratch package; a failed run must
    leave nothing beside the input."""
    from weightpress.config import PalettizeConfig, QuantizeConfig
    from weightpress.job import compress_model

    # the seed's weights are small (576-1536 values): a low threshold selects all of them
    if quantize:
        config = QuantizeConfig(dtype="int4", granularity="per_block", block_size=4, weight_threshold=64)
    else:
        config = PalettizeConfig(nbits=2, weight_threshold=64)
    out = os.path.join(s.root, "out.mlpackage")
    try:
        compress_model(s.package, out, config, max_memory=256 << 20, verify=True)
    except _expected(strict):
        leftovers = sorted(n for n in os.listdir(s.root) if n != "in.mlpackage")
        if leftovers:
            raise AssertionError(f"a failed run left {leftovers}")


TARGETS = {"manifest": manifest, "weights": weights, "spec": spec, "yaml": yaml, "recipe": recipe,
           "package": package}
