"""bnref.experiments.interactive_progress: on under a Jupyter server or Colab, off in builds."""

import pytest

from bnref.experiments import interactive_progress


@pytest.fixture
def clean_env(monkeypatch):
    for name in ("BNREF_PROGRESS", "JPY_SESSION_NAME", "COLAB_RELEASE_TAG"):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_off_without_a_jupyter_server(clean_env):
    assert interactive_progress() is False


@pytest.mark.parametrize("name", ["JPY_SESSION_NAME", "COLAB_RELEASE_TAG"])
def test_on_in_an_interactive_session(clean_env, name):
    clean_env.setenv(name, "x")
    assert interactive_progress() is True


@pytest.mark.parametrize("value, expected", [("1", True), ("yes", True), ("0", False),
                                             ("false", False), ("", False)])
def test_explicit_setting_wins(clean_env, value, expected):
    clean_env.setenv("JPY_SESSION_NAME", "x")
    clean_env.setenv("BNREF_PROGRESS", value)
    assert interactive_progress() is expected
