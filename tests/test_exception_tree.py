"""Every public exception of the package sits in the tree of ``asyncsched.exceptions`` (issue 19)."""

from __future__ import annotations

import functools
import importlib
import inspect
import pkgutil

import pytest

import asyncsched
from asyncsched import exceptions


def _modules() -> list[str]:
    names = []
    for info in pkgutil.walk_packages(asyncsched.__path__, "asyncsched."):
        if ".migrations" in info.name or info.name.endswith("__main__"):
            continue  # alembic's env.py runs a migration when imported; __main__ runs the CLI
        names.append(info.name)
    return names


@functools.cache
def _exception_classes() -> dict[str, type[BaseException]]:
    found: dict[str, type[BaseException]] = {}
    for name in _modules():
        try:
            module = importlib.import_module(name)
        except ImportError:  # an optional extra (arq) that is not installed
            continue
        for attr, value in vars(module).items():
            if (
                inspect.isclass(value)
                and issubclass(value, BaseException)
                and value.__module__.startswith("asyncsched")
                and not attr.startswith("_")
                and not value.__name__.startswith("_")
            ):
                found[f"{name}.{attr}"] = value
    return found


def test_walk_finds_the_known_exceptions() -> None:
    classes = set(_exception_classes().values())
    assert exceptions.Conflict in classes
    assert exceptions.MalformedEvent in classes


@pytest.mark.parametrize("where", sorted(_exception_classes()))
def test_every_public_exception_is_in_the_tree(where: str) -> None:
    cls = _exception_classes()[where]
    assert issubclass(cls, exceptions.AsyncschedError), f"{where} is not an AsyncschedError"
    assert cls.__module__ == "asyncsched.exceptions", f"{where} is defined outside exceptions.py"
    assert cls.__name__ in exceptions.__all__
    assert getattr(exceptions, cls.__name__) is cls
    assert cls.__name__ in (exceptions.__doc__ or ""), f"{cls.__name__} is not drawn in the tree"
