import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from optimise import scratch
from optimise.scratch import Owner, clean_stale, is_alive, make_owned_dir, owned_dir, parse_owner

KIND = "leanserve-test"


def folder_of_a_process_that_exited(parent: Path) -> Path:
    """A folder made by a real process that has exited since (and was reaped)."""
    code = (
        "import sys; from pathlib import Path; from optimise.scratch import make_owned_dir; "
        f"print(make_owned_dir({KIND!r}, Path(sys.argv[1])))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(parent)], capture_output=True, text=True, check=True, timeout=60
    )
    return Path(done.stdout.strip())


def test_an_owned_folder_names_this_process_and_goes_when_the_block_ends(tmp_path: Path) -> None:
    with owned_dir(KIND, tmp_path) as folder:
        (folder / "file").write_text("x")
        owner = parse_owner(folder.name, KIND)
        assert owner == scratch.this_process() and owner.pid == os.getpid()
    assert not folder.exists()


def test_an_owned_folder_goes_on_an_exception_too(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError), owned_dir(KIND, tmp_path) as folder:
        raise RuntimeError("boom")
    assert not folder.exists()


def test_the_folder_of_a_process_that_is_gone_is_cleaned(tmp_path: Path) -> None:
    left = folder_of_a_process_that_exited(tmp_path)
    (left / "half.onnx").write_bytes(b"half")
    assert left.is_dir()
    assert clean_stale(tmp_path, KIND) == [left]
    assert not left.exists()


def test_folders_of_running_processes_and_other_names_are_kept(tmp_path: Path) -> None:
    mine = make_owned_dir(KIND, tmp_path)
    other_kind = make_owned_dir("something-else", tmp_path)
    unrelated = tmp_path / "leanserve-test-notes"
    unrelated.mkdir()
    child = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from optimise.scratch import make_owned_dir; "
         f"print(make_owned_dir({KIND!r}, __import__('pathlib').Path(sys.argv[1])), flush=True); time.sleep(60)",
         str(tmp_path)],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert child.stdout is not None
        childs = Path(child.stdout.readline().strip())
        assert clean_stale(tmp_path, KIND) == []
        assert mine.is_dir() and other_kind.is_dir() and unrelated.is_dir() and childs.is_dir()
    finally:
        child.kill()
        child.wait()
    assert clean_stale(tmp_path, KIND) == [childs]


def test_a_reused_pid_does_not_pass_for_the_owner() -> None:
    me = scratch.this_process()
    if me.start == 0:
        pytest.skip("no /proc: only the pid can be checked here")
    assert is_alive(me)
    assert not is_alive(Owner(me.pid, me.start + 1, me.host))


def test_a_folder_of_another_host_is_kept_until_it_is_old(tmp_path: Path) -> None:
    foreign = tmp_path / f"{KIND}-{os.getpid()}-1@another-host.abc123"
    foreign.mkdir()
    assert clean_stale(tmp_path, KIND) == []
    old = time.time() - scratch.FOREIGN_STALE_S - 60
    os.utime(foreign, (old, old))
    assert clean_stale(tmp_path, KIND) == [foreign]


def test_a_missing_parent_cleans_nothing(tmp_path: Path) -> None:
    assert clean_stale(tmp_path / "absent", KIND) == []
