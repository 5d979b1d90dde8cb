"""Fixtures for the package tests. They run against whichever ``tabagent`` is
importable; bindings/python/test.sh makes that the wheel installed in a fresh
virtualenv, and runs pytest from a directory outside the source tree."""

import os
import sys
from pathlib import Path
from typing import Iterator

import pytest

import tabagent

REPO = Path(__file__).resolve().parents[3]
MODEL = os.environ.get(
    "TABAGENT_TEST_MODEL", os.path.expanduser("~/.cache/tabagent/models/SmolLM2-135M-Instruct.Q4_1.gguf")
)
# The hub imitation (standard library only) lives in the repository's tests.
sys.path.insert(0, str(REPO / "tests" / "hub"))


@pytest.fixture(scope="session")
def model_path() -> str:
    assert os.path.exists(MODEL), f"test model missing at {MODEL}: run scripts/fetch-model.sh"
    return MODEL


@pytest.fixture(scope="session")
def model(model_path: str) -> Iterator[tabagent.Model]:
    with tabagent.Model(model_path) as m:
        yield m


@pytest.fixture
def ctx(model: tabagent.Model) -> Iterator[tabagent.Context]:
    with tabagent.Context(model, n_ctx=512, n_threads=2) as c:
        yield c
