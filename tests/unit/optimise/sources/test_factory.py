from __future__ import annotations

import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from optimise.errors import OptimiseError, SourceError
from optimise.source import ModelBundle
from optimise.sources.factory import is_factory_spec, load_factory

GOOD_FACTORY = """
import numpy as np
import torch

from optimise.source import ModelBundle


def build():
    torch.manual_seed(0)
    x = np.ones((4, 3), dtype=np.float32)
    return ModelBundle(
        name="user-model",
        module=torch.nn.Linear(3, 2),
        input_names=("x",),
        output_names=("y",),
        dynamic_axes={"x": {0: "batch"}, "y": {0: "batch"}},
        latency_inputs={"x": x[:1]},
        eval_inputs={"x": x},
    )


not_callable = 42
"""


@pytest.fixture
def write_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[str, str], str]]:
    """Write a module into tmp_path, importable under a name unique to this test."""
    monkeypatch.syspath_prepend(str(tmp_path))
    written: list[str] = []

    def write(stem: str, source: str) -> str:
        name = f"leanserve_test_factory_{stem}_{abs(hash(str(tmp_path)))}"
        (tmp_path / f"{name}.py").write_text(textwrap.dedent(source))
        written.append(name)
        return name

    yield write
    for name in written:
        sys.modules.pop(name, None)


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("pkg.mod:build", True),
        ("mod:build", True),
        ("_private.mod_2:make_bundle", True),
        ("mod", False),
        ("mod:", False),
        (":build", False),
        ("a:b:c", False),
        ("model.pt", False),
        ("/abs/path.py:build", False),
        ("mod:build()", False),
    ],
)
def test_is_factory_spec(spec: str, expected: bool) -> None:
    assert is_factory_spec(spec) is expected


@pytest.mark.parametrize("spec", ["no_colon", "a:b:c", "mod:fn()"])
def test_bad_format_is_a_source_error(spec: str) -> None:
    with pytest.raises(SourceError, match=r"package\.module:function"):
        load_factory(spec)


def test_missing_module_is_a_source_error() -> None:
    with pytest.raises(SourceError, match="cannot import 'leanserve_no_such_module_xyz'") as info:
        load_factory("leanserve_no_such_module_xyz:build")
    assert isinstance(info.value, OptimiseError)
    assert isinstance(info.value.__cause__, ImportError)


def test_missing_function_is_a_source_error(write_module: Callable[[str, str], str]) -> None:
    name = write_module("good_missing", GOOD_FACTORY)
    with pytest.raises(SourceError, match=f"'{name}' has no callable 'nope'"):
        load_factory(f"{name}:nope")


def test_a_non_callable_attribute_is_a_source_error(write_module: Callable[[str, str], str]) -> None:
    name = write_module("good_attr", GOOD_FACTORY)
    with pytest.raises(SourceError, match="has no callable 'not_callable'"):
        load_factory(f"{name}:not_callable")


def test_a_factory_that_raises_is_reported_with_its_message(write_module: Callable[[str, str], str]) -> None:
    name = write_module(
        "raises",
        """
        def build():
            raise RuntimeError("the weights file is gone: 42")
        """,
    )
    with pytest.raises(SourceError) as info:
        load_factory(f"{name}:build")
    message = str(info.value)
    assert f"factory '{name}:build' raised RuntimeError" in message
    assert "the weights file is gone: 42" in message
    assert isinstance(info.value.__cause__, RuntimeError)


def test_a_factory_returning_the_wrong_type_is_a_source_error(
    write_module: Callable[[str, str], str],
) -> None:
    name = write_module(
        "wrong_type",
        """
        import torch

        def build():
            return torch.nn.Linear(2, 2)
        """,
    )
    with pytest.raises(SourceError, match=r"returned Linear, expected optimise\.source\.ModelBundle"):
        load_factory(f"{name}:build")


def test_a_good_factory_returns_its_bundle(write_module: Callable[[str, str], str]) -> None:
    name = write_module("good", GOOD_FACTORY)
    bundle = load_factory(f"{name}:build")
    assert isinstance(bundle, ModelBundle)
    assert bundle.name == "user-model"
    assert bundle.input_names == ("x",)
    assert not bundle.module.training
    assert bundle.run_torch(bundle.eval_inputs)[0].shape == (4, 2)


def test_a_factory_in_a_package_is_found(tmp_path: Path, write_module: Callable[[str, str], str]) -> None:
    package = tmp_path / "leanserve_test_pkg_factory"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "models.py").write_text(textwrap.dedent(GOOD_FACTORY))
    try:
        assert load_factory("leanserve_test_pkg_factory.models:build").name == "user-model"
    finally:
        sys.modules.pop("leanserve_test_pkg_factory.models", None)
        sys.modules.pop("leanserve_test_pkg_factory", None)


@pytest.mark.parametrize(
    "source",
    ['raise RuntimeError("config missing at import time")\n', "def build(:\n    pass\n"],
    ids=["raises-at-import", "syntax-error"],
)
def test_a_module_that_fails_to_import_is_a_source_error(
    source: str, write_module: Callable[[str, str], str]
) -> None:
    name = write_module("import_fails", source)
    with pytest.raises(SourceError, match=f"cannot import '{name}'"):
        load_factory(f"{name}:build")
