"""The lock files pin what pyproject.toml asks for, within its ranges, and the image and the dev venv install
from them: a dependency added to pyproject.toml without `bash deploy/dev.sh lock` fails here."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO_ROOT = Path(__file__).resolve().parents[2]
LOCKS = REPO_ROOT / "requirements"
PROJECT = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]


def pins(lock: Path) -> dict[str, str]:
    """name -> pinned version; every pin carries at least one hash."""
    text = lock.read_text()
    found = dict(re.findall(r"^([A-Za-z0-9._-]+)==([^\s;]+)", text, re.M))
    assert len(re.findall(r"^\S+==\S+.*\\\n\s+--hash=sha256:", text, re.M)) == len(found)
    return {canonicalize_name(name): version for name, version in found.items()}


@pytest.mark.parametrize(
    ("lock", "wanted"),
    [
        ("runtime.txt", PROJECT["dependencies"]),
        ("dev.txt", PROJECT["dependencies"] + PROJECT["optional-dependencies"]["dev"]),
    ],
)
def test_a_lock_pins_every_dependency_within_its_range(lock: str, wanted: list[str]) -> None:
    pinned = pins(LOCKS / lock)
    versions = {
        requirement: pinned.get(canonicalize_name(requirement.name)) for requirement in map(Requirement, wanted)
    }
    outside = {str(r): v for r, v in versions.items() if v is None or v not in r.specifier}
    assert not outside  # missing (None) or out of range


def test_the_runtime_lock_agrees_with_the_dev_lock_and_the_bench_extra_stays_out() -> None:
    runtime, dev = pins(LOCKS / "runtime.txt"), pins(LOCKS / "dev.txt")
    assert {name: dev.get(name) for name in runtime} == runtime
    bench = {canonicalize_name(Requirement(r).name) for r in PROJECT["optional-dependencies"]["bench"]}
    assert not bench & dev.keys()


def test_the_image_and_the_dev_venv_install_from_the_locks() -> None:
    dockerfile = (REPO_ROOT / "deploy" / "Dockerfile").read_text()
    assert "--require-hashes -r requirements/runtime.txt" in dockerfile
    assert re.search(r"pip install [^\n]*--no-deps \.", dockerfile)  # the package itself resolves nothing more
    dev_sh = (REPO_ROOT / "deploy" / "dev.sh").read_text()
    ensure_venv = dev_sh[dev_sh.index("ensure_venv() {") :].split("\n}\n", 1)[0]
    assert "--require-hashes -r requirements/dev.txt" in ensure_venv and "--no-deps -e ." in ensure_venv
