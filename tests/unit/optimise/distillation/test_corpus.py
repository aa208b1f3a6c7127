"""The offline corpus: each source parsed, protected texts kept out, built once and cached."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from optimise.demos.minilm import DATA_DIR, read_lines
from optimise.distillation import corpus
from optimise.errors import ConfigError

WORDNET_LINE = (
    "02084071 05 n 03 dog 0 domestic_dog 0 Canis_familiaris 0 042 @ 02083346 n 0000 | a member of the "
    'genus Canis that has been domesticated by man since prehistoric times; "the dog barked all night"  \n'
)


def _fake_wordnet(root: Path) -> Path:
    root.mkdir()
    for name in corpus.WORDNET_FILES:
        (root / name).write_text("  1 This software and database is being provided\n" + WORDNET_LINE)
    return root


def test_wordnet_yields_definitions_and_example_sentences(tmp_path: Path) -> None:
    lines = list(corpus.wordnet_sentences(_fake_wordnet(tmp_path / "wn")))
    assert "The dog barked all night" in lines
    assert "a member of the genus Canis that has been domesticated by man since prehistoric times" in lines
    assert not any("software and database" in line for line in lines)  # the licence header


def test_a_missing_wordnet_names_the_package_to_install(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"apt-get install wordnet-base.*--distil-data"):
        list(corpus.wordnet_sentences(tmp_path))


def test_fortunes_are_split_at_percent_lines_without_attributions(tmp_path: Path) -> None:
    (tmp_path / "people").write_text(
        "A bore is a man who talks so much about himself\nthat you can't talk about yourself.\n"
        "\t\t-- Someone\n%\nA city is a large community.\n%\n"
    )
    assert list(corpus.fortune_sentences(tmp_path)) == [
        "A bore is a man who talks so much about himself that you can't talk about yourself.",
        "A city is a large community.",
    ]


def test_missing_fortunes_name_the_package_to_install(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="apt-get install fortunes"):
        list(corpus.fortune_sentences(tmp_path / "none"))


def test_docstrings_skip_doctests_and_indented_blocks(tmp_path: Path) -> None:
    (tmp_path / "mod.py").write_text(
        'def f():\n    """Return the answer. It is computed slowly.\n\n    >>> f()\n    42\n    """\n'
    )
    assert list(corpus.docstring_sentences(tmp_path)) == ["Return the answer.", "It is computed slowly."]


def test_catalogue_messages_read_installed_translations() -> None:
    if not list(corpus.LOCALE_DIR.glob("*/LC_MESSAGES/coreutils.mo")):
        pytest.skip("no translated coreutils messages on this machine")
    messages = set(corpus.catalogue_messages())
    assert len(messages) > 1_000
    assert any(not line.isascii() for line in messages)  # other scripts than Latin


def test_assemble_removes_protected_lines_whatever_their_case_and_spacing() -> None:
    sources = {
        "a": ["The cat sat on the mat.", "Hello  World", "kept line"],
        "b": ["kept line", "other text"],
    }
    lines, per_source, dropped = corpus.assemble(sources, ["the CAT sat on the mat.", "hello world"], seed=1)
    originals = {line for line in lines if line in {"kept line", "other text"}}
    assert originals == {"kept line", "other text"}
    assert dropped == 2
    assert per_source["a"] == 1 and per_source["b"] == 1  # the repeat of "kept line" counts once
    assert not {corpus.normalise(line) for line in lines} & {"the cat sat on the mat.", "hello world"}


def test_assemble_is_the_same_under_the_same_seed() -> None:
    sources = {"a": [f"sentence number {i} about something" for i in range(200)]}
    assert corpus.assemble(sources, [], seed=3) == corpus.assemble(sources, [], seed=3)
    assert corpus.assemble(sources, [], seed=3)[0] != corpus.assemble(sources, [], seed=4)[0]


def test_surface_variants_change_the_form_not_the_words() -> None:
    rng = random.Random(0)
    variants = {corpus.surface_variant("The weather is fine today.", rng) for _ in range(60)}
    assert "THE WEATHER IS FINE TODAY." in variants
    assert any(v.endswith(("!!", "??", "?!", "!?", "..")) for v in variants)
    assert any(any(c in corpus.EMOJI for c in v) for v in variants)


def test_generated_forms_cover_numbers_dates_amounts_and_addresses() -> None:
    rng = random.Random(0)
    forms = [corpus.generated_form(rng, ["river", "garden"]) for _ in range(400)]
    assert any(f.lstrip("-").replace(",", "").isdigit() for f in forms)  # plain and grouped integers
    assert any(f.count("-") == 2 and f[:4].isdigit() for f in forms)  # ISO dates
    assert any(any(month in f for month in ("January", "March", "July", "December")) for f in forms)
    assert any(f.startswith(("$", "€", "£")) for f in forms)
    assert any(f.startswith("https://www.") and f.split("/")[-1] in {"river", "garden"} for f in forms)
    assert any(":" in f and f.replace(":", "").isdigit() for f in forms)  # 24-hour times
    assert len(set(forms)) > 300  # varied, not a handful of templates filled the same way


def test_generated_forms_join_the_corpus_and_stay_out_of_the_protected_texts() -> None:
    sources = {"a": [f"the river garden number {i} is green" for i in range(400)]}
    rng = random.Random(5)  # the forms `assemble` draws after its shuffles differ, so probe broadly
    protected = [corpus.generated_form(rng, ["river", "garden"]) for _ in range(2000)]
    lines, per_source, _ = corpus.assemble(sources, protected, seed=2)
    assert per_source["generated forms"] > 0
    assert not {corpus.normalise(t) for t in protected} & {corpus.normalise(t) for t in lines}


@pytest.fixture(scope="module")
def demo_corpus(tmp_path_factory: pytest.TempPathFactory) -> corpus.CorpusInfo:
    if not (corpus.WORDNET_DIR / "data.noun").is_file() or not corpus.FORTUNES_DIR.is_dir():
        pytest.skip("wordnet-base and fortunes are not installed (make tools installs them)")
    protected = read_lines(DATA_DIR / "minilm_fidelity.txt") + read_lines(DATA_DIR / "minilm_calibration.txt")
    return corpus.build_corpus(tmp_path_factory.mktemp("cache"), protected)


def test_the_demo_corpus_is_large_varied_and_disjoint_from_the_judging_texts(
    demo_corpus: corpus.CorpusInfo,
) -> None:
    lines = demo_corpus.path.read_text(encoding="utf-8").splitlines()
    assert len(lines) == demo_corpus.lines >= 20_000
    assert {"wordnet", "fortunes", "python docstrings", "surface variants", "generated forms"} <= set(
        demo_corpus.per_source
    )
    protected = read_lines(DATA_DIR / "minilm_fidelity.txt") + read_lines(DATA_DIR / "minilm_calibration.txt")
    assert not {corpus.normalise(t) for t in protected} & {corpus.normalise(t) for t in lines}


def test_the_corpus_is_built_once_then_read_from_the_cache(
    demo_corpus: corpus.CorpusInfo, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(corpus, "wordnet_sentences", lambda: pytest.fail("rebuilt the cached corpus"))
    protected = read_lines(DATA_DIR / "minilm_fidelity.txt") + read_lines(DATA_DIR / "minilm_calibration.txt")
    again = corpus.build_corpus(demo_corpus.path.parent.parent, protected)
    assert again == demo_corpus


def test_a_rewritten_catalogue_changes_the_files_digest(tmp_path: Path) -> None:
    import os

    from optimise.distillation.corpus import _files_digest

    catalogue = tmp_path / "de" / "LC_MESSAGES" / "tool.mo"
    catalogue.parent.mkdir(parents=True)
    catalogue.write_bytes(b"one")
    os.utime(catalogue, ns=(1_000_000_000, 1_000_000_000))
    before = _files_digest(tmp_path.glob("*/LC_MESSAGES/*.mo"))
    catalogue.write_bytes(b"two")  # same size, same count of files
    os.utime(catalogue, ns=(2_000_000_000, 2_000_000_000))
    assert _files_digest(tmp_path.glob("*/LC_MESSAGES/*.mo")) != before
    assert _files_digest([]) == _files_digest([tmp_path / "missing.mo"])
