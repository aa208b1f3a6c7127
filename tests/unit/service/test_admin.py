from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from pydantic import SecretStr
from starlette.testclient import TestClient

from monitoring.config import TriggerConfig
from monitoring.trigger import Trigger
from optimise import store
from service.admin import create_admin_app
from service.control import DataPlaneControl
from service.dataplane import DataPlane
from service.settings import ServiceSettings
from service.types import InferenceRequest, Tensor

TOKEN = "s3cret-admin-token-for-tests"


def _client(plane: DataPlane, token: str | None = TOKEN) -> TestClient:
    settings = ServiceSettings(admin_token=SecretStr(token) if token else None)
    return TestClient(create_admin_app(lambda: plane, settings))


def _auth(token: str = TOKEN) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _tiny_version(plane: DataPlane) -> str:
    request = InferenceRequest("tiny-served", [Tensor("features", np.zeros((1, 16), np.float32))])
    return plane.infer(request).version


def test_admin_routes_do_not_exist_without_a_token(dataplane: DataPlane) -> None:
    response = _client(dataplane, token=None).get("/models", headers=_auth())
    assert response.status_code == 404 and "LEANSERVE_ADMIN_TOKEN" in response.json()["error"]


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer wrong"},
        {"Authorization": TOKEN},
        {"Authorization": "Bearer"},
        {"Authorization": "Bearer "},
        {"Authorization": "Bearer    "},
        {"Authorization": f"Basic {TOKEN}"},
    ],
)
def test_a_missing_or_wrong_token_is_refused(dataplane: DataPlane, headers: dict[str, str]) -> None:
    assert _client(dataplane).get("/models", headers=headers).status_code == 401


def test_load_promote_and_roll_back(dataplane: DataPlane, tiny_tags: list[str]) -> None:
    client = _client(dataplane)
    first, second = (tag.split(":")[1] for tag in tiny_tags)
    listing = client.get("/models/tiny-served/versions", headers=_auth()).json()
    assert listing["live"] == first and {first, second} <= set(listing["stored"])

    staged = client.post(
        "/models/tiny-served/load", json={"version": second, "promote": False}, headers=_auth()
    )
    assert staged.status_code == 200 and staged.json()["staged"] == second
    assert _tiny_version(dataplane) == first  # staging does not serve

    promoted = client.post("/models/tiny-served/promote", headers=_auth()).json()
    assert promoted["live"] == second and promoted["previous"] == first
    assert _tiny_version(dataplane) == second

    rolled = client.post("/models/tiny-served/rollback", headers=_auth()).json()
    assert rolled["live"] == first and _tiny_version(dataplane) == first


def test_a_version_that_fails_its_checks_never_goes_live(dataplane: DataPlane, tiny_tags: list[str]) -> None:
    client = _client(dataplane)
    live = _tiny_version(dataplane)
    missing = client.post("/models/tiny-served/load", json={"version": "nope"}, headers=_auth())
    assert missing.status_code == 404 and "nope" in missing.json()["error"]

    tampered_tag = tiny_tags[1]
    model_file = Path(store.get_model(tampered_tag).path) / "model.onnx"
    original = model_file.read_bytes()
    try:
        model_file.write_bytes(original[:-16] + b"\0" * 16)
        response = client.post(
            "/models/tiny-served/load", json={"version": tampered_tag.split(":")[1]}, headers=_auth()
        )
        assert response.status_code == 409 and "sha256" in response.json()["error"]
    finally:
        model_file.write_bytes(original)
    assert _tiny_version(dataplane) == live


def test_bad_admin_requests(dataplane: DataPlane) -> None:
    client = _client(dataplane)
    assert client.post("/models/tiny-served/load", content=b"{", headers=_auth()).status_code == 400
    assert client.post("/models/unknown/promote", headers=_auth()).status_code == 404
    assert client.post("/models/tiny-served/promote", headers=_auth()).status_code == 409  # nothing staged


@pytest.mark.parametrize("blank", ["", "   ", "\t\n"])
def test_a_blank_token_turns_the_admin_api_off(dataplane: DataPlane, blank: str) -> None:
    settings = ServiceSettings(admin_token=blank)
    assert settings.admin_token is None
    client = TestClient(create_admin_app(lambda: dataplane, settings))
    for headers in ({"Authorization": "Bearer"}, {"Authorization": "Bearer "}, {}):
        response = client.post("/models/tiny-served/promote", headers=headers)
        assert response.status_code == 404 and "LEANSERVE_ADMIN_TOKEN" in response.json()["error"]


@pytest.mark.parametrize(
    "version", ["bad tag!!", "../../etc", "", "a" * 64, "-leading", "trailing-", "has space", "ü"]
)
def test_an_invalid_version_string_is_a_400_before_the_store(dataplane: DataPlane, version: str) -> None:
    response = _client(dataplane).post("/models/tiny-served/load", json={"version": version}, headers=_auth())
    assert response.status_code == 400 and "version must be" in response.json()["error"]


@pytest.mark.parametrize(
    "body",
    [{"version": 3}, {"version": None}, {"version": ["a"]}, {"version": "abc", "promote": "yes"}, [], "x"],
)
def test_a_malformed_load_body_is_a_400(dataplane: DataPlane, body: object) -> None:
    response = _client(dataplane).post("/models/tiny-served/load", json=body, headers=_auth())
    assert response.status_code == 400 and response.json()["error"]


def test_a_well_formed_version_that_is_not_stored_is_a_404(dataplane: DataPlane) -> None:
    response = _client(dataplane).post("/models/tiny-served/load", json={"version": "zz9"}, headers=_auth())
    assert response.status_code == 404 and "zz9" in response.json()["error"]


@pytest.mark.parametrize("body", [{"version": "bad tag!!"}, {"version": "zz9"}, "x"])
def test_an_unknown_model_is_a_404_whatever_the_body(dataplane: DataPlane, body: object) -> None:
    response = _client(dataplane).post("/models/unknown/load", json=body, headers=_auth())
    assert response.status_code == 404 and "unknown" in response.json()["error"]


def test_loading_the_live_version_again_leaves_nothing_to_roll_back_to(dataplane: DataPlane) -> None:
    client = _client(dataplane)
    live = _tiny_version(dataplane)
    again = client.post("/models/tiny-served/load", json={"version": live}, headers=_auth()).json()
    assert again["live"] == live and again["previous"] is None
    assert client.post("/models/tiny-served/rollback", headers=_auth()).status_code == 409


def test_a_reoptimisation_is_queued_once_and_a_second_request_is_a_409(
    dataplane: DataPlane, tmp_path: Path
) -> None:
    # The trigger's worker is not started: the first run stays queued, as a long rebuild would be running.
    trigger = Trigger(DataPlaneControl(dataplane, None), TriggerConfig(audit_log=tmp_path / "audit.jsonl"))  # type: ignore[arg-type]
    settings = ServiceSettings(admin_token=SecretStr(TOKEN))
    client = TestClient(create_admin_app(lambda: dataplane, settings, lambda: trigger))
    first = client.post("/models/tiny-served/reoptimise", headers=_auth())
    assert first.status_code == 202 and first.json() == {"model": "tiny-served", "queued": True}
    again = client.post("/models/tiny-served/reoptimise", headers=_auth())
    assert again.status_code == 409 and "already queued or running" in again.json()["error"]
    assert client.post("/models/unknown/reoptimise", headers=_auth()).status_code == 404
