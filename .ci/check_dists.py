"""CI: what the built distributions contain (python .ci/check_dists.py DIST_DIR).

The wheel holds the package and its compiled extension, nothing of the tests (no test
files, no Metal emulation harness, no sources); the sdist holds every file a build needs:
everything git tracks under cpp/, metal/, python/ and the top-level build files.
"""

import os
import subprocess
import sys
import tarfile
import zipfile


def fail(message):
    print(f"check_dists: {message}", file=sys.stderr)
    sys.exit(1)


def main(dist):
    wheels = [f for f in os.listdir(dist) if f.endswith(".whl")]
    sdists = [f for f in os.listdir(dist) if f.endswith(".tar.gz")]
    if len(wheels) != 1 or len(sdists) != 1:
        fail(f"expected one wheel and one sdist in {dist}, found {wheels + sdists}")

    names = zipfile.ZipFile(os.path.join(dist, wheels[0])).namelist()
    package = [n for n in names if n.startswith("weightpress/")]
    required = ["weightpress/__init__.py", "weightpress/cli.py", "weightpress/_run_site/sitecustomize.py",
                "weightpress/mlpackage/stream.py", "weightpress/aimodel/emit.py"]
    missing = [r for r in required if r not in names]
    if missing or not any(n.startswith("weightpress/_core") and n.endswith((".so", ".pyd")) for n in names):
        fail(f"the wheel lacks {missing or 'the compiled extension weightpress/_core'}")
    test_like = [n for n in names if "tests/" in n or "metal_emu" in n or os.path.basename(n).startswith("test_")
                 or n.endswith((".cpp", ".h", ".mm"))]
    if test_like:
        fail(f"the wheel carries test or source files: {test_like[:10]}")
    print(f"wheel {wheels[0]}: {len(package)} files of the package, no tests or sources")

    with tarfile.open(os.path.join(dist, sdists[0])) as tar:
        inside = {m.name.split("/", 1)[1] for m in tar.getmembers() if "/" in m.name and m.isfile()}
    tracked = subprocess.run(["git", "ls-files", "cpp", "metal", "python", "CMakeLists.txt", "pyproject.toml",
                              "README.md"], capture_output=True, text=True, check=True).stdout.split()
    absent = [t for t in tracked if t not in inside]
    if absent:
        fail(f"the sdist lacks files a build needs: {absent[:10]}")
    built = [n for n in inside if n.startswith(("build/", "dist/")) or "/_core." in n]
    if built:
        fail(f"the sdist carries build products: {built[:10]}")
    print(f"sdist {sdists[0]}: all {len(tracked)} tracked build inputs, no build products")


if __name__ == "__main__":
    main(sys.argv[1])
