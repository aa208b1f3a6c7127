import errno
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import bentoml
import pytest

from optimise import staging, store
from optimise.staging import publish, staged_version, staging_dir

MakeVersion = Callable[..., Path]  # the `make_version` fixture (tests/unit/optimise/conftest.py)


def leftover_of_a_killed_build() -> Path:
    """A staging folder whose owner (a real process) has exited, with a half-written version in it."""
    code = (
        "from optimise.scratch import make_owned_dir; from optimise.staging import STAGE_KIND, staging_dir; "
        "print(make_owned_dir(STAGE_KIND, staging_dir()))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    left = Path(done.stdout.strip().splitlines()[-1])
    (left / "model.onnx").write_bytes(b"half")
    return left


def test_staging_is_beside_the_store_not_in_it(private_store: Path) -> None:
    assert staging_dir() == private_store.parent / ".leanserve-staging"


def test_leftovers_are_invisible_to_bentoml_and_leanserve_then_cleaned_by_the_next_save(
    private_store: Path, make_version: MakeVersion, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the subprocess must use the private store too: it resolves staging_dir from BENTOML_HOME
    monkeypatch.setenv("BENTOML_HOME", str(private_store.parent))
    make_version("digits")
    left = leftover_of_a_killed_build()
    assert left.parent == staging_dir()
    assert len(bentoml.models.list()) == 1 and len(store.versions()) == 1
    with staged_version() as staged:
        assert staged.parent == staging_dir()
        assert not left.exists()


def test_a_staged_version_that_is_not_published_is_removed(private_store: Path) -> None:
    with pytest.raises(RuntimeError), staged_version() as staged:
        (staged / "model.onnx").write_bytes(b"half")
        raise RuntimeError("the build failed")
    assert not staged.exists()
    assert list(staging_dir().iterdir()) == []


def test_publish_moves_the_whole_version_in_and_names_it_latest(
    private_store: Path, make_version: MakeVersion
) -> None:
    made = make_version("digits")  # a complete version, written in place: stage a copy of it
    with staged_version() as staged:
        for item in made.iterdir():
            (staged / item.name).write_bytes(item.read_bytes())
        target = private_store / "digits" / "v2"
        (staged / "model.yaml").write_text((made / "model.yaml").read_text().replace(made.name, "v2"))
        publish(staged, target)
        assert not staged.exists()
    assert sorted(p.name for p in target.iterdir()) == ["manifest.json", "model.onnx", "model.yaml"]
    assert (private_store / "digits" / "latest").read_text() == "v2"
    assert target.stat().st_mode & 0o777 == (private_store / "digits").stat().st_mode & 0o777
    assert [p.name for p in (private_store / "digits").iterdir() if p.name.startswith(".")] == []
    assert store.get_model("digits:v2").tag.version == "v2"


def test_a_store_on_another_filesystem_is_copied_model_yaml_last_or_not_at_all(
    private_store: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def cross_device(self: Path, target: Path) -> None:
        raise OSError(errno.EXDEV, "Invalid cross-device link")

    def full_disk(src: str, dst: str) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Path, "rename", cross_device)
    for name in ("v1", "v2"):
        with staged_version() as staged:
            (staged / "model.yaml").write_text("name: x\n")
            (staged / "model.onnx").write_bytes(b"onnx")
            if name == "v1":
                publish(staged, private_store / "digits" / name)
                continue
            with monkeypatch.context() as patch:
                patch.setattr(staging.shutil, "copy2", full_disk)  # copytree binds its own copy2
                with pytest.raises(OSError, match="No space"):
                    publish(staged, private_store / "digits" / name)
    assert (private_store / "digits" / "v1" / "model.yaml").is_file()
    assert (private_store / "digits" / "v1" / "model.onnx").read_bytes() == b"onnx"
    assert not (private_store / "digits" / "v2").exists()  # model.yaml is the last file: nothing half
