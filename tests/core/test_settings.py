"""PHOTOSCORE_API_KEYS: the comma form and the JSON-list form pydantic-settings users write; a
bracket or quote never ends up inside a key."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from app.core.settings import Settings


def _keys(monkeypatch: pytest.MonkeyPatch, value: str) -> list[str]:
    monkeypatch.setenv("PHOTOSCORE_API_KEYS", value)
    return Settings(_env_file=None).api_keys


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("k1", ["k1"]),
        ("k1,k2", ["k1", "k2"]),
        (" k1 , k2 ,", ["k1", "k2"]),
        ("", []),
        ('["k1","k2"]', ["k1", "k2"]),
        ('[ "k1", " k2 " ]', ["k1", "k2"]),
        ("[]", []),
        ('["only-one"]', ["only-one"]),
    ],
)
def test_accepted_forms(monkeypatch: pytest.MonkeyPatch, value: str, expected: list[str]) -> None:
    assert _keys(monkeypatch, value) == expected


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("[k1,k2]", "not a JSON list"),  # brackets without quotes: would have made keys '[k1' and 'k2]'
        ('["k1", 2]', "list of strings"),
        ('["k1"', "not a JSON list"),
        ("k1],[k2", "bracket"),
        ('"k1","k2"', "quote"),
        ("k1 k2", "space"),
    ],
)
def test_refused_forms_say_why(monkeypatch: pytest.MonkeyPatch, value: str, reason: str) -> None:
    with pytest.raises(ValidationError) as info:
        _keys(monkeypatch, value)
    message = str(info.value)
    assert "PHOTOSCORE_API_KEYS" in message and reason in message


def test_no_key_keeps_brackets(monkeypatch: pytest.MonkeyPatch) -> None:
    """Whatever form is given, an accepted key has no bracket or quote in it."""
    for value in ('["a","b"]', "a,b", '[" a ", "b"]'):
        assert all(not set(k) & set("[]\"'") for k in _keys(monkeypatch, value))


def test_serve_refuses_a_malformed_list(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    """The server does not start with a key list it would misread; it says why, and does not
    echo the keys into its log."""
    from app.cli import main

    monkeypatch.setenv("PHOTOSCORE_API_KEYS", "[k1,k2]")
    assert main(["serve"]) == 2
    err = capsys.readouterr().err
    assert "PHOTOSCORE_API_KEYS" in err and "not a JSON list" in err
    assert "k1,k2" not in err
