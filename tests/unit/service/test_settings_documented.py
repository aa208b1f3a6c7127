"""Every LEANSERVE_ setting has a row in the README's settings table."""

from __future__ import annotations

from pathlib import Path

from service.settings import ServiceSettings

README = Path(__file__).resolve().parents[3] / "README.md"


def _documented(name: str, rows: list[str]) -> bool:
    """`LEANSERVE_NAME` itself, or a row that abbreviates it: `LEANSERVE_HEAD` ... `..._TAIL`."""
    words = name.split("_")
    if any(f"LEANSERVE_{name}`" in row for row in rows):
        return True
    for cut in range(1, len(words)):
        head, tail = "_".join(words[:cut]), "_".join(words[cut:])
        if any(f"LEANSERVE_{head}" in row and f"..._{tail}`" in row for row in rows):
            return True
    return False


def test_every_setting_is_in_the_readme() -> None:
    rows = [line for line in README.read_text().splitlines() if line.startswith("| `LEANSERVE_")]
    missing = [n for n in ServiceSettings.model_fields if not _documented(n.upper(), rows)]
    assert not missing, f"settings missing from the README's table: {missing}"
