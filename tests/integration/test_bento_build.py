"""`bentoml build` packs the service, its code and the demo models offline."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from servers import REPO

pytestmark = pytest.mark.integration


def test_bento_builds_offline_with_the_demo_models(demo_tags: dict[str, str], tmp_path: Path) -> None:
    home = tmp_path / "bentoml"
    home.mkdir()
    (home / "models").symlink_to(Path(os.environ["BENTOML_HOME"]) / "models")
    bentoml = Path(sys.executable).parent / "bentoml"
    env = dict(os.environ, BENTOML_HOME=str(home), BENTOML_DO_NOT_TRACK="true")
    result = subprocess.run(
        [str(bentoml), "build", str(REPO)], env=env, capture_output=True, text=True, timeout=300, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    [bento] = list((home / "bentos" / "leanserve").glob("*/bento.yaml"))
    manifest = yaml.safe_load(bento.read_text())
    assert {m["tag"].split(":")[0] for m in manifest["models"]} == set(demo_tags)  # the latest of each
    source = bento.parent / "src"
    # The native routes are a mounted Starlette app (service/native.py), not BentoML API methods.
    assert (source / "service" / "native.py").is_file() and (source / "service" / "app.py").is_file()
    assert (source / "service" / "protos" / "grpc_predict_v2.proto").is_file()
    assert not (source / "tests").exists()
