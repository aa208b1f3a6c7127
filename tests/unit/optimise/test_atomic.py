"""Files replaced in one step: whole on success, untouched on failure, no temporary file left."""

from __future__ import annotations

from pathlib import Path

import pytest

from optimise.atomic import replacing


def test_the_new_content_replaces_the_file_whole(tmp_path: Path) -> None:
    target = tmp_path / "record.json"
    target.write_text("old")
    with replacing(target) as out:
        out.write("new ü")
        assert target.read_text() == "old"  # nothing visible until the block ends
    assert target.read_text(encoding="utf-8") == "new ü"
    with replacing(tmp_path / "blob", "wb") as out:
        out.write(b"\x00\x01")
    assert (tmp_path / "blob").read_bytes() == b"\x00\x01"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["blob", "record.json"]


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "record.json"
    target.write_text("old")
    with pytest.raises(RuntimeError), replacing(target) as out:
        out.write("half")
        raise RuntimeError("the writer failed")
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["record.json"]
