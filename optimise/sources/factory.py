"""Python factories: `package.module:function` returning a `ModelBundle`.

This is how any `torch.nn.Module` comes in: the factory builds the module and
names its example inputs and evaluation data. The bundled `digits` demo is one.
"""

from __future__ import annotations

import importlib
import re

from optimise.errors import SourceError, one_line
from optimise.source import ModelBundle

FACTORY_PATTERN = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")


def is_factory_spec(spec: str) -> bool:
    return bool(FACTORY_PATTERN.match(spec))


def load_factory(spec: str) -> ModelBundle:
    if not is_factory_spec(spec):
        raise SourceError(f"{spec!r} is not a factory reference of the form package.module:function")
    module_name, function_name = spec.split(":")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # a missing module, or one that fails while importing
        raise SourceError(f"cannot import {module_name!r} for factory {spec!r}: {one_line(exc)}") from exc
    factory = getattr(module, function_name, None)
    if not callable(factory):
        raise SourceError(f"{module_name!r} has no callable {function_name!r}")
    try:
        bundle = factory()
    except Exception as exc:  # the user's code failed: report it as theirs, in one line
        raise SourceError(f"factory {spec!r} raised {one_line(exc)}") from exc
    if not isinstance(bundle, ModelBundle):
        raise SourceError(
            f"factory {spec!r} returned {type(bundle).__name__}, expected optimise.source.ModelBundle"
        )
    return bundle
