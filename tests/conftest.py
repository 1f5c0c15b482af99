"""Shared fixtures: the real embedded models, loaded once per test session."""

import pytest

from explorer.loading import load_model


@pytest.fixture(scope="session")
def smollm2():
    return load_model("smollm2", device="cpu")


@pytest.fixture(scope="session")
def minilm():
    return load_model("minilm", device="cpu")
