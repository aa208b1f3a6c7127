"""An offline text corpus for distilling text models, built from text a fresh machine installs.

No model hub and no dataset download is reachable, so the corpus is assembled from
sources a package registry provides:

- WordNet 3.0 glosses (Debian package `wordnet-base`, `/usr/share/wordnet/data.*`):
  the definition and the example sentences of every synset, about 117,000 synsets
  across every field of the vocabulary. Licence: WordNet 3.0 (Princeton
  University; use, copy, modify and distribute for any purpose, with the notice).
- Fortune cookies (Debian package `fortunes`, `/usr/share/games/fortunes`): quotes,
  jokes and short dialogue, the conversational register. Licence: BSD-4-Clause
  (fortune-mod) with the quotations' own notices.
- Program messages (`/usr/share/locale/*/LC_MESSAGES/*.mo`, read with `gettext`):
  every installed program's English messages and their translations in up to ~90
  languages (Debian's essential coreutils alone ships 86), the only multilingual text
  on the machine, and short interface text ("Cancel", "File not found").
  Licences: each program's own (coreutils: GPL-3.0-or-later).
- Docstrings of the running Python's standard library, read with `ast` (nothing
  is imported): technical prose, names and code-like text. Licence: PSF-2.0.

A share of lines is added again in the surface forms real traffic has and these
sources lack (shouting, elongated words, runs of punctuation, emoji), made by
`surface_variant` with a seeded generator; a share are paragraphs of several lines
joined (inputs as long as the model takes); and a share are generated forms
(`generated_form`: numbers, amounts, dates, times, versions, addresses, paths).
Lines from 2 characters are kept: short inputs are where a student is weakest.

Lines shared with the texts that judge or calibrate a model (its fidelity and
calibration sets) are removed, compared case- and whitespace-insensitively, so
that a student is never scored on what it was trained on. The corpus is written
once to the cache, keyed by its sources and settings, and read from there after.
"""

from __future__ import annotations

import ast
import gettext
import hashlib
import json
import logging
import random
import re
import sysconfig
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from optimise.atomic import replacing
from optimise.errors import ConfigError

logger = logging.getLogger(__name__)

WORDNET_DIR = Path("/usr/share/wordnet")
WORDNET_FILES = ("data.noun", "data.verb", "data.adj", "data.adv")
WORDNET_PACKAGE = "wordnet-base"
FORTUNES_DIR = Path("/usr/share/games/fortunes")
FORTUNES_PACKAGE = "fortunes"
LOCALE_DIR = Path("/usr/share/locale")
CORPUS_FORMAT = 3  # bump when the extraction changes
SOURCE_CAP = 60_000
"""At most this many lines from one source, so that no source (WordNet's 160,000) drowns the others."""
VARIANT_SHARE = 0.15
"""Lines added again in another surface form, as a share of the corpus."""
PARAGRAPH_SHARE = 0.03
"""Lines of 3-8 corpus lines joined, as a share of the corpus: the sources are sentences, and traffic
also sends paragraphs up to the model's length limit."""
FORM_SHARE = 0.05
"""Generated numbers, dates, amounts, addresses... (`generated_form`), as a share of the corpus."""
EMOJI = [chr(c) for c in (*range(0x1F600, 0x1F64F), *range(0x1F300, 0x1F3F0), *range(0x1F440, 0x1F4FC))]
MIN_CHARS = 2
MAX_CHARS = 400
_SPACES = re.compile(r"\s+")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z])")
_QUOTED = re.compile(r'"([^"]+)"')


@dataclass(frozen=True)
class CorpusInfo:
    """Where a built corpus came from: its file, its size in lines and per source, and the licences."""

    path: Path
    lines: int
    per_source: dict[str, int]
    excluded: int
    """Lines dropped because they are in the evaluation or calibration texts."""
    licences: tuple[str, ...] = (
        "WordNet 3.0 (Princeton University)",
        "BSD-4-Clause (fortune-mod)",
        "each installed program's licence (translated messages)",
        "PSF-2.0 (Python standard library)",
    )


def normalise(text: str) -> str:
    """The form two lines are compared in: whitespace collapsed, case folded."""
    return _SPACES.sub(" ", text).strip().casefold()


def _clean(text: str) -> str | None:
    text = _SPACES.sub(" ", text).strip()
    return text if MIN_CHARS <= len(text) <= MAX_CHARS else None


def wordnet_sentences(root: Path = WORDNET_DIR) -> Iterator[str]:
    """Definitions and example sentences of every WordNet synset (see `wndb(5WN)`: the gloss follows ' | ').

    Raises ConfigError naming the Debian package when the database is missing.
    """
    missing = [name for name in WORDNET_FILES if not (root / name).is_file()]
    if missing:
        raise ConfigError(
            f"the distillation corpus needs WordNet ({root}/{missing[0]} is missing): "
            f"install it with `apt-get install {WORDNET_PACKAGE}`, or pass --distil-data FILE"
        )
    for name in WORDNET_FILES:
        with (root / name).open(encoding="utf-8", errors="replace") as handle:
            for line in handle:
                if line.startswith("  ") or " | " not in line:  # licence header
                    continue
                gloss = line.split(" | ", 1)[1]
                for example in _QUOTED.findall(gloss):
                    if (clean := _clean(example)) is not None:
                        yield clean[0].upper() + clean[1:]
                definition = _QUOTED.sub("", gloss).split(";")[0]
                if (clean := _clean(definition)) is not None:
                    yield clean


def fortune_sentences(root: Path = FORTUNES_DIR) -> Iterator[str]:
    """Every fortune of the `fortunes` package (entries end at a line holding '%'), attribution lines
    dropped. Raises ConfigError naming the Debian package when it is missing."""
    files = sorted(p for p in root.glob("*") if p.is_file() and not p.suffix) if root.is_dir() else []
    if not files:
        raise ConfigError(
            f"the distillation corpus needs fortunes ({root} is empty or missing): install it with "
            f"`apt-get install {FORTUNES_PACKAGE}`, or pass --distil-data FILE"
        )
    for path in files:
        text = path.read_text(encoding="utf-8", errors="replace")
        for entry in text.split("\n%\n"):
            lines = [line for line in entry.splitlines() if not line.strip().startswith("--")]
            if (clean := _clean(" ".join(lines))) is not None:
                yield clean


def catalogue_messages(root: Path = LOCALE_DIR) -> Iterator[str]:
    """The messages of every installed gettext catalogue, one language after another: each translation
    and its English original (repeats across languages are dropped by `assemble`)."""
    for path in sorted(root.glob("*/LC_MESSAGES/*.mo")):
        try:
            with path.open("rb") as handle:
                catalogue = gettext.GNUTranslations(handle)
        except (OSError, LookupError, UnicodeDecodeError, ValueError):  # a malformed catalogue header
            continue
        # `_catalog` is the parsed message table (msgid -> msgstr); gettext has no public iterator.
        for pair in catalogue._catalog.items():  # type: ignore[attr-defined]
            for text in pair:  # plural entries are keyed (msgid, index): only plain strings are text
                single_line = isinstance(text, str) and "\n" not in text.strip()
                if single_line and (clean := _clean(text)) is not None:
                    yield clean


def surface_variant(text: str, rng: random.Random) -> str:
    """`text` as chat traffic writes it: shouted, lower-cased, a letter held, punctuation run or emoji."""
    kind = rng.randrange(6)
    if kind == 0:
        return text.upper()
    if kind == 1:
        return text.lower().rstrip(".")
    if kind == 2:
        words = text.split()
        index = rng.randrange(len(words))
        vowels = [i for i, c in enumerate(words[index]) if c in "aeiouy"]
        if vowels:
            at = rng.choice(vowels)
            words[index] = words[index][:at] + words[index][at] * rng.randint(3, 9) + words[index][at + 1 :]
        return " ".join(words)
    if kind == 3:
        return text.rstrip(".!?") + "".join(rng.choice("!?.") for _ in range(rng.randint(2, 6)))
    if kind == 4:
        return f"{text} {''.join(rng.choice(EMOJI) for _ in range(rng.randint(1, 4)))}"
    return " ".join(text.split()[: rng.randint(1, 3)]) + rng.choice(["", "?", "!", "..."])


_MONTHS = (
    "January", "February", "March", "April", "May", "June",
    "July", "August", "September", "October", "November", "December",
)  # fmt: skip


def _ordinal(day: int) -> str:
    suffix = "th" if 10 <= day % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(day % 10, "th")
    return f"{day}{suffix}"


def generated_form(rng: random.Random, words: Sequence[str]) -> str:
    """One line in a form that traffic has and prose sources lack: a number (integer, decimal, negative,
    grouped, scientific, a fraction or a percentage), an amount of money, a date or a time in one of
    several conventions, a version, a web or e-mail address, a hashtag or a file path; addresses are
    made of `words` (lower-case words of the corpus itself). Generated, so nothing is copied."""
    kind = rng.randrange(10)
    year, month, day = rng.randint(1900, 2039), rng.randint(1, 12), rng.randint(1, 28)
    if kind == 0:
        value = rng.choice([rng.randint(0, 99), rng.randint(100, 99_999), rng.randint(10**5, 10**9)])
        return rng.choice([str(value), f"{value:,}", f"-{value}", f"{value:,}".replace(",", " ")])
    if kind == 1:
        value = rng.uniform(-1000, 1000) * 10 ** rng.randint(-4, 2)
        return rng.choice([f"{value:.{rng.randint(1, 5)}f}", f"{value:.3e}", f"{abs(value):.1f}%"])
    if kind == 2:
        amount = rng.uniform(0.5, 5000)
        return rng.choice([f"${amount:,.2f}", f"€{amount:.2f}", f"£{amount:.0f}", f"{amount:.2f} USD"])
    if kind == 3:
        return f"{rng.randint(1, 9)}/{rng.choice([2, 3, 4, 8, 16])}"
    if kind == 4:
        return rng.choice(
            [
                f"{year}-{month:02d}-{day:02d}",
                f"{day:02d}/{month:02d}/{year}",
                f"{month}/{day}/{year % 100:02d}",
                f"{_MONTHS[month - 1]} {_ordinal(day)}, {year}",
                f"{day} {_MONTHS[month - 1]} {year}",
                f"{_MONTHS[month - 1][:3]} {day}",
            ]
        )
    if kind == 5:
        hour, minute = rng.randint(0, 23), rng.randint(0, 59)
        return rng.choice(
            [f"{hour:02d}:{minute:02d}", f"{hour % 12 or 12}:{minute:02d} {'pm' if hour >= 12 else 'am'}"]
        )
    if kind == 6:
        return rng.choice(["v", "", "version "]) + ".".join(
            str(rng.randint(0, 20)) for _ in range(rng.randint(2, 3))
        )
    first, second = rng.choice(words), rng.choice(words)
    if kind == 7:
        return rng.choice(
            [
                f"https://www.{first}.com/{second}",
                f"http://{first}.org/{second}?id={rng.randint(1, 999)}",
                f"www.{first}-{second}.net",
            ]
        )
    if kind == 8:
        return rng.choice(
            [f"{first}.{second}@{rng.choice(words)}.org", f"#{first}{second}", f"@{first}_{second}"]
        )
    return rng.choice(
        [f"/usr/{first}/{second}.txt", f"C:\\{first.title()}\\{second}.docx", f"{first}_{second}.py"]
    )


def docstring_sentences(stdlib: Path | None = None) -> Iterator[str]:
    """Sentences of the docstrings of the standard library's modules, classes and functions.

    Doctest lines (`>>>`) and indented blocks (code, parameter tables) are skipped.
    """
    root = stdlib or Path(sysconfig.get_paths()["stdlib"])
    for path in sorted(root.glob("**/*.py")):
        if "site-packages" in path.parts or "test" in path.parts or "tests" in path.parts:
            continue
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"))
        except (OSError, SyntaxError, UnicodeDecodeError, ValueError):
            continue
        for node in ast.walk(tree):
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                yield from _docstring_sentences(ast.get_docstring(node) or "")


def _docstring_sentences(docstring: str) -> Iterator[str]:
    for paragraph in docstring.split("\n\n"):
        lines = paragraph.splitlines()
        if not lines or any(line.startswith((" ", "\t", ">>>")) for line in lines):
            continue
        for sentence in _SENTENCE_END.split(" ".join(lines)):
            if (clean := _clean(sentence)) is not None:
                yield clean


def assemble(
    sources: Mapping[str, Iterable[str]], exclude: Iterable[str], seed: int = 0
) -> tuple[list[str], dict[str, int], int]:
    """Unique lines of every source, minus `exclude`, shuffled with `seed`.

    Returns (lines, lines kept per source, lines excluded).
    """
    rng = random.Random(seed)
    excluded_forms = {normalise(text) for text in exclude}
    seen: set[str] = set()
    lines: list[str] = []
    per_source: dict[str, int] = {}
    dropped = 0

    def keep(text: str) -> bool:
        nonlocal dropped
        form = normalise(text)
        if form in seen:
            return False
        seen.add(form)
        if form in excluded_forms:
            dropped += 1
            return False
        return True

    for name, texts in sources.items():
        unique = [text for text in texts if keep(text)]
        rng.shuffle(unique)
        per_source[name] = min(len(unique), SOURCE_CAP)
        lines.extend(unique[:SOURCE_CAP])
    variants = [
        v
        for v in (surface_variant(t, rng) for t in rng.sample(lines, int(len(lines) * VARIANT_SHARE)))
        if keep(v)
    ]
    per_source["surface variants"] = len(variants)
    lines.extend(variants)
    paragraphs = [
        " ".join(rng.sample(lines, rng.randint(3, 8))) for _ in range(int(len(lines) * PARAGRAPH_SHARE))
    ]
    per_source["joined paragraphs"] = len(paragraphs)
    words = sorted({w for line in lines for w in line.lower().split() if w.isalpha() and 3 <= len(w) <= 10})
    forms = [f for f in (generated_form(rng, words) for _ in range(int(len(lines) * FORM_SHARE))) if keep(f)]
    per_source["generated forms"] = len(forms)
    lines.extend(forms)
    lines.extend(paragraphs)
    rng.shuffle(lines)
    return lines, per_source, dropped


def build_corpus(cache_dir: Path, exclude: Sequence[str], seed: int = 0) -> CorpusInfo:
    """The corpus file in `cache_dir/corpus/`, built on first use (about 20 s). Raises ConfigError."""
    key = _cache_key(exclude, seed)
    path = cache_dir / "corpus" / f"text-{key}.txt"
    meta = path.with_suffix(".json")
    if path.is_file() and meta.is_file():
        data = json.loads(meta.read_text(encoding="utf-8"))
        return CorpusInfo(path, int(data["lines"]), dict(data["per_source"]), int(data["excluded"]))
    sources = {
        "wordnet": wordnet_sentences(),
        "fortunes": fortune_sentences(),
        "translated messages": catalogue_messages(),
        "python docstrings": docstring_sentences(),
    }
    lines, per_source, dropped = assemble(sources, exclude, seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    with replacing(path) as handle:
        handle.write("\n".join(lines) + "\n")
    with replacing(meta) as handle:
        json.dump({"lines": len(lines), "per_source": per_source, "excluded": dropped}, handle)
    logger.info("built the distillation corpus: %d lines %s -> %s", len(lines), per_source, path)
    return CorpusInfo(path, len(lines), per_source, dropped)


def _cache_key(exclude: Sequence[str], seed: int) -> str:
    wordnet = [(n, (WORDNET_DIR / n).stat().st_size) for n in WORDNET_FILES if (WORDNET_DIR / n).is_file()]
    spec = {
        "format": CORPUS_FORMAT,
        "wordnet": wordnet,
        "fortunes": sorted(p.name for p in FORTUNES_DIR.glob("*")) if FORTUNES_DIR.is_dir() else [],
        "catalogues": _files_digest(LOCALE_DIR.glob("*/LC_MESSAGES/*.mo")),
        "stdlib": sysconfig.get_paths()["stdlib"],
        "python": sysconfig.get_python_version(),
        "exclude": hashlib.sha256("\n".join(sorted(map(normalise, exclude))).encode()).hexdigest(),
        "seed": seed,
    }
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]


def _files_digest(paths: Iterable[Path]) -> str:
    """sha256 over each file's path, size and modification time: a catalogue that an upgrade adds,
    removes or rewrites makes a new corpus (reading every catalogue's bytes would cost more)."""
    digest = hashlib.sha256()
    for path in sorted(paths):
        try:
            stat = path.stat()
        except OSError:
            continue
        digest.update(f"{path}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()
