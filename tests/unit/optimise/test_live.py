import json
import subprocess
import sys
from pathlib import Path

import pytest

from optimise.live import LIVE_FILE, read_previous, read_record, write_live


def test_nothing_recorded_reads_empty(tmp_path: Path) -> None:
    assert read_record(tmp_path) == {}


def test_a_write_keeps_the_other_models(tmp_path: Path) -> None:
    write_live(tmp_path, "digits", "v1")
    write_live(tmp_path, "minilm", "v7")
    write_live(tmp_path, "digits", "v2")
    assert read_record(tmp_path) == {"digits": "v2", "minilm": "v7"}
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


def test_the_version_live_before_is_recorded_beside_the_live_one(tmp_path: Path) -> None:
    write_live(tmp_path, "digits", "v1")
    write_live(tmp_path, "digits", "v2", previous="v1")
    write_live(tmp_path, "minilm", "v7", previous="v7")  # itself: no previous
    assert read_record(tmp_path) == {"digits": "v2", "minilm": "v7"}
    assert read_previous(tmp_path) == {"digits": "v1"}
    write_live(tmp_path, "digits", "v3")  # recorded without one: the old previous does not linger
    assert read_previous(tmp_path) == {}


def test_an_unreadable_record_is_ignored_and_then_replaced(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / LIVE_FILE).write_text("{not json")
    assert read_record(tmp_path) == {}
    assert "unreadable live record" in caplog.text
    write_live(tmp_path, "digits", "v3")
    assert read_record(tmp_path) == {"digits": "v3"}
    (tmp_path / LIVE_FILE).write_text(json.dumps({"digits": "v1", "minilm": {"no": "version"}}))
    assert read_record(tmp_path) == {}


def test_a_read_only_store_cannot_be_written(tmp_path: Path) -> None:
    with pytest.raises(OSError):
        write_live(tmp_path / "absent", "digits", "v1")


def test_concurrent_writers_in_several_processes_lose_no_entry(tmp_path: Path) -> None:
    """Server workers promote at the same time: each process records its own models, none is lost."""
    code = (
        "import sys; from pathlib import Path; from optimise.live import write_live\n"
        "for i in range(25): write_live(Path(sys.argv[1]), f'{sys.argv[2]}-{i}', str(i))"
    )
    writers = [subprocess.Popen([sys.executable, "-c", code, str(tmp_path), f"worker{w}"]) for w in range(4)]
    assert [w.wait(timeout=120) for w in writers] == [0, 0, 0, 0]
    record = read_record(tmp_path)
    assert len(record) == 100
    assert record["worker3-24"] == "24"
