"""One source for run settings (RunConfig field metadata, the CLI agrees), the registry, did-you-mean hints."""
from __future__ import annotations

import warnings

import pytest

from ltbench.errors import NotFoundError, did_you_mean
from ltbench.registry import Registry


def test_registering_a_name_twice_warns_and_the_later_one_wins():
    registry = Registry("widget")

    @registry.register("gear", summary="first")
    class First:
        pass

    with pytest.warns(UserWarning, match=r"widget 'gear' registered twice: .*Second .*replaces .*First"):
        @registry.register("gear", summary="second")
        class Second:
            pass

    assert registry.get("gear").obj is Second and registry.get("gear").summary == "second"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # another name: no warning
        registry.register("cog")(type("Cog", (), {}))
    with pytest.raises(NotFoundError, match=r"unknown widget 'gearr'; did you mean 'gear'\?"):
        registry.get("gearr")


def test_create_method_lives_with_the_registry():
    from ltbench import method, registry

    assert method.create_method is registry.create_method  # the old import path still works
    assert registry.create_method("crt", {"bn": "frozen"}).options["bn"] == "frozen"


def test_did_you_mean():
    assert did_you_mean("smok", ["smoke", "paper", "cpu"]) == "; did you mean 'smoke'?"
    assert did_you_mean("crtt", ["crt", "ce", "cb"], cutoff=0.4).startswith("; did you mean 'crt'")
    assert did_you_mean("zzz", ["smoke", "paper"]) == ""
    assert did_you_mean("tau", ["tau-norm", "tau2"], n=1).count("'") == 2
