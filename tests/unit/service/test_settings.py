from __future__ import annotations

import pytest
from pydantic import ValidationError

from service.settings import MIN_ADMIN_TOKEN_CHARS, ServiceSettings


def test_an_empty_admin_token_in_the_environment_means_no_admin_api(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LEANSERVE_ADMIN_TOKEN", "")
    assert ServiceSettings().admin_token is None
    monkeypatch.setenv("LEANSERVE_ADMIN_TOKEN", "   ")
    assert ServiceSettings().admin_token is None


def test_a_short_admin_token_refuses_to_start(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LEANSERVE_ADMIN_TOKEN", "x" * (MIN_ADMIN_TOKEN_CHARS - 1))
    with pytest.raises(ValidationError, match=f"at least {MIN_ADMIN_TOKEN_CHARS} characters"):
        ServiceSettings()


def test_a_token_is_kept_without_surrounding_whitespace(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LEANSERVE_ADMIN_TOKEN", f"  {'k' * MIN_ADMIN_TOKEN_CHARS}\n")
    token = ServiceSettings().admin_token
    assert token is not None and token.get_secret_value() == "k" * MIN_ADMIN_TOKEN_CHARS
