""".mlpackage directories: find the model spec and weight.bin, check them, write atomically.

A package is a directory with Manifest.json listing items (path under Data/, author, name);
rootModelIdentifier names the model spec item. coremltools writes the weights as the item
"weights" (a directory holding weight.bin) by author com.apple.CoreML (docs/formats.md,
"The .mlpackage directory").
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import uuid
from dataclasses import dataclass
from typing import Optional

from ..errors import PackageError, WeightFileError
from .weight_file import WeightFileReader

WEIGHTS_REFERENCE = "@model_path/weights/weight.bin"
SPEC_IOS15, SPEC_IOS16, SPEC_IOS18, SPEC_IOS26 = 6, 7, 9, 10
# the ML program opset of each specification version
OPSETS = {6: "CoreML5", 7: "CoreML6", 8: "CoreML7", 9: "CoreML8", 10: "CoreML9"}
TARGET_NAMES = {6: "iOS15", 7: "iOS16", 8: "iOS17", 9: "iOS18", 10: "iOS26"}
TARGETS = {name: version for version, name in TARGET_NAMES.items()}


@dataclass(frozen=True)
class ModelPackage:
    path: str
    spec_path: str
    weights_dir: Optional[str]

    @property
    def weight_file(self) -> Optional[str]:
        if self.weights_dir is None:
            return None
        path = os.path.join(self.weights_dir, "weight.bin")
        return path if os.path.exists(path) else None


def open_package(path: str) -> ModelPackage:
    """Locates the spec and weights of a .mlpackage, or raises PackageError saying why not."""
    if not os.path.exists(path):
        raise PackageError(f"{path}: no such file or directory")
    if not os.path.isdir(path):
        if path.endswith(".mlmodel"):
            raise PackageError(f"{path}: an .mlmodel file holds a neural network or a weightless spec; weight "
                               "compression needs an ML program saved as an .mlpackage")
        raise PackageError(f"{path}: not an .mlpackage directory")
    manifest_path = os.path.join(path, "Manifest.json")
    try:
        with open(manifest_path, "rb") as f:
            manifest = json.loads(f.read())
    except FileNotFoundError:
        raise PackageError(f"{path}: not an .mlpackage (no Manifest.json)") from None
    except OSError as exc:
        raise PackageError(f"{path}: cannot read Manifest.json ({exc.strerror})") from None
    except (ValueError, RecursionError) as exc:
        raise PackageError(f"{path}: malformed Manifest.json ({exc})") from None
    root, items = _manifest_entries(path, manifest)
    data = os.path.join(path, "Data")
    spec_path = _item_path(path, data, root)
    if not os.path.isfile(spec_path):
        raise PackageError(f"{path}: the model spec {root['path']} named by Manifest.json is missing")
    weights_dir = None
    for item in items:
        if item.get("name") == "weights" and item.get("author") == root.get("author"):
            weights_dir = _item_path(path, data, item)
    return ModelPackage(path, spec_path, weights_dir)


def _manifest_entries(path, manifest):
    """The root item and all items of a parsed Manifest.json, each checked to be what the
    package layout needs (a hostile manifest gets a PackageError, never a KeyError)."""

    def malformed(why):
        return PackageError(f"{path}: malformed Manifest.json ({why})")

    if not isinstance(manifest, dict):
        raise malformed("not a JSON object")
    items = manifest.get("itemInfoEntries")
    if not isinstance(items, dict):
        raise malformed("no itemInfoEntries object")
    root_id = manifest.get("rootModelIdentifier")
    if not isinstance(root_id, str) or root_id not in items:
        raise malformed(f"rootModelIdentifier {root_id!r} names no item")
    for key, item in items.items():
        if not isinstance(item, dict) or not isinstance(item.get("path"), str):
            raise malformed(f"item {key!r} has no path")
    return items[root_id], list(items.values())


def _item_path(path, data, item):
    """The file an item names, which must lie inside the package's Data directory."""
    relative = item["path"]
    full = os.path.normpath(os.path.join(data, relative))
    if os.path.isabs(relative) or "\x00" in relative or not full.startswith(os.path.normpath(data) + os.sep):
        raise PackageError(f"{path}: Manifest.json names {relative!r}, outside the package's Data directory")
    return full


def function_order(spec):
    """The functions in the order the model description lists them (the default first is
    not required), then any the description does not name (protobuf maps have no order)."""
    listed = [f.name for f in spec.description.functions]
    names = [n for n in listed if n in spec.mlProgram.functions]
    return names + sorted(n for n in spec.mlProgram.functions if n not in names)


def iter_blob_offsets(spec):
    """Offsets of every weight.bin blob an ML program spec refers to (all functions and
    nested blocks), with the name of the op holding each."""

    def values_of(op):
        for attr in op.attributes.values():
            yield attr
        for arg in op.inputs.values():
            for binding in arg.arguments:
                if binding.HasField("value"):
                    yield binding.value

    def walk(block):
        for op in block.operations:
            for value in values_of(op):
                if value.WhichOneof("value") == "blobFileValue":
                    yield value.blobFileValue, op
            for inner in op.blocks:
                yield from walk(inner)

    for function in spec.mlProgram.functions.values():
        for block in function.block_specializations.values():
            yield from walk(block)


def check_weights(package: ModelPackage, spec) -> int:
    """Validates weight.bin against the spec: every blob header in the file, and every blob
    the program refers to. Returns the number of referenced blobs. Raises PackageError."""
    refs = list(iter_blob_offsets(spec)) if spec.WhichOneof("Type") == "mlProgram" else []
    if not refs:
        return 0
    weight_file = package.weight_file
    if weight_file is None:
        raise PackageError(f"{package.path}: the program refers to weight.bin, which is missing")
    try:
        with WeightFileReader(weight_file) as reader:
            for _ in reader.walk():
                pass
            for ref, op in refs:
                if ref.fileName != WEIGHTS_REFERENCE:
                    raise PackageError(f"{package.path}: op '{op.outputs[0].name}' refers to {ref.fileName}, "
                                       f"not {WEIGHTS_REFERENCE}")
                try:
                    reader.blob(ref.offset)
                except WeightFileError as exc:
                    raise PackageError(f"op '{op.outputs[0].name}': {exc}") from None
    except WeightFileError as exc:
        raise PackageError(str(exc)) from None
    return len(refs)


def package_size(path: str) -> int:
    """Bytes of all files under a package directory."""
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            total += os.path.getsize(os.path.join(root, name))
    return total


STAGING_MARK = ".weightpress-tmp-"


def temporary_sibling(path: str) -> str:
    """A fresh path next to `path` (same filesystem, so the final rename is atomic), named
    after the staging process: `.NAME.weightpress-tmp-PID-RANDOM.mlpackage`."""
    parent = os.path.dirname(os.path.abspath(path))
    stem, ext = os.path.splitext(os.path.basename(path))  # keep .mlpackage: coremltools insists on it
    return os.path.join(parent, f".{stem}{STAGING_MARK}{os.getpid()}-{uuid.uuid4().hex[:8]}{ext}")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def remove_stale_staging(path: str) -> list:
    """Removes what a killed run (kill -9, power loss) left staged for `path`: staging
    directories of the same output name whose process no longer exists. Another live run's
    staging directory (its process exists) is never touched. Returns the removed paths."""
    parent = os.path.dirname(os.path.abspath(path))
    stem, ext = os.path.splitext(os.path.basename(path))
    prefix = f".{stem}{STAGING_MARK}"
    removed = []
    try:
        names = os.listdir(parent)
    except OSError:
        return removed
    for name in names:
        if not (name.startswith(prefix) and name.endswith(ext)):
            continue
        pid_text = name[len(prefix):-len(ext) or None].split("-", 1)[0]
        if not pid_text.isdigit() or _pid_alive(int(pid_text)):
            continue  # not ours to judge (an old name scheme) or a live run's
        remove(os.path.join(parent, name))
        removed.append(os.path.join(parent, name))
    return removed


def publish(tmp_path: str, final_path: str, overwrite: bool) -> None:
    """Moves a completed output into place: a rename, so readers see the old package or the
    new one, never a mixture. An existing output is replaced only with overwrite=True."""
    if os.path.lexists(final_path):
        if not overwrite:
            raise PackageError(f"{final_path} exists (use --force to overwrite)")
        backup = temporary_sibling(final_path)
        os.rename(final_path, backup)
        try:
            os.rename(tmp_path, final_path)
        except BaseException:
            os.rename(backup, final_path)
            raise
        remove(backup)
    else:
        os.rename(tmp_path, final_path)


def remove(path: str) -> None:
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path, ignore_errors=True)
    elif os.path.lexists(path):
        os.unlink(path)


def check_program(package: ModelPackage, spec) -> None:
    """An ML program of a specification version this tool knows, or PackageError."""
    kind = spec.WhichOneof("Type")
    if kind != "mlProgram":
        raise PackageError(f"{package.path} is a {kind} model; weight compression needs an ML program (mlprogram)")
    if spec.specificationVersion not in OPSETS:
        raise PackageError(f"{package.path}: unsupported specification version {spec.specificationVersion}")
    _check_program_structure(package.path, spec.mlProgram)


# A const larger than this many elements is a damaged or hostile spec, not a weight (2^40
# fp16 values are 2 TB); checked before any size is multiplied out or allocated.
MAX_CONST_ELEMENTS = 1 << 40


def _check_program_structure(path, program):
    """What the streaming walk relies on, checked once: every function has the block of its
    opset, every op names its outputs, every const holds a tensor `val` of constant shape
    stored inline or in weight.bin. A damaged spec gets a PackageError naming the op."""

    def bad(where, why):
        return PackageError(f"{path}: malformed program: {where}: {why}")

    def walk(block, where):
        for index, op in enumerate(block.operations):
            op_where = f"{where}, op {index} ({op.type or 'no type'})"
            if not op.type:
                raise bad(op_where, "an op without a type")
            if not op.outputs or not all(o.name for o in op.outputs):
                raise bad(op_where, "an op whose outputs are not named")
            if op.type == "const":
                _check_const(op, op_where)
            for inner in op.blocks:
                walk(inner, op_where)

    def _check_const(op, where):
        val = op.attributes.get("val")
        if val is None:
            raise bad(where, f"const {op.outputs[0].name} has no value")
        if val.type.WhichOneof("type") != "tensorType":
            raise bad(where, f"const {op.outputs[0].name} is not a tensor")
        count = 1
        for d in val.type.tensorType.dimensions:
            if d.WhichOneof("dimension") != "constant":
                raise bad(where, f"const {op.outputs[0].name} has a dimension that is not a constant")
            count *= d.constant.size
            if count > MAX_CONST_ELEMENTS:
                raise bad(where, f"const {op.outputs[0].name} claims more than 2^40 elements")
        if val.WhichOneof("value") not in ("immediateValue", "blobFileValue"):
            raise bad(where, f"const {op.outputs[0].name} holds no immediate value or weight.bin blob")

    if not program.functions:
        raise bad("the program", "no functions")
    for name, function in program.functions.items():
        if function.opset not in function.block_specializations:
            raise bad(f"function {name}", f"no block for its opset {function.opset!r}")
        for opset, block in function.block_specializations.items():
            walk(block, f"function {name}")


def load_spec(package: ModelPackage):
    """The package's Model protobuf (coremltools' classes), or PackageError."""
    from .proto import modules

    Model_pb2, _ = modules()
    spec = Model_pb2.Model()
    try:
        with open(package.spec_path, "rb") as f:
            spec.ParseFromString(f.read())
    except Exception as exc:  # protobuf raises DecodeError and friends
        raise PackageError(f"{package.path}: cannot parse the model spec ({type(exc).__name__}: {exc})") from None
    return spec


def read_package(path: str):
    """(package, spec) of a package every reader may trust: opened, parsed, its program's
    structure and every weight.bin reference checked (PackageError otherwise). The one
    front door of compress, info, plan and --verify."""
    package = open_package(path)
    spec = load_spec(package)
    check_program(package, spec)
    check_weights(package, spec)
    return package, spec


def save_model(mlmodel, path: str, overwrite: bool, check=None) -> None:
    """MLModel.save into a sibling temporary path, check(staged path) when given, then
    publish(): never a partial package."""
    tmp = temporary_sibling(path)
    try:
        try:
            mlmodel.save(tmp)
        except OSError:
            raise
        except Exception as exc:  # coremltools' C++ blob writer reports a full disk as a RuntimeError
            if shutil.disk_usage(os.path.dirname(os.path.abspath(path))).free < (1 << 20):
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), path) from exc
            raise
        if check is not None:
            check(tmp)
        publish(tmp, path, overwrite)
    finally:
        remove(tmp)

