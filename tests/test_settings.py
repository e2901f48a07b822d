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


# --- item 4: one source for run settings ----------------------------------------------------------------
def _run_parameters() -> dict:
    import typer.main

    from ltbench.cli import app

    group = typer.main.get_command(app)
    return {param.name: param for param in group.commands["run"].params}


def test_every_run_config_field_has_its_cli_option_with_the_same_default_and_type():
    """Fails when a RunConfig field is added without an `ltbench run` option (or the other way round), when a
    default differs between the two, or when the option parses another type than the field holds."""
    import dataclasses
    import typing
    from pathlib import Path

    from ltbench import cli
    from ltbench.cli import RUN_ONLY, run_config
    from ltbench.config import RunConfig, cli_parameter

    params = _run_parameters()
    fields = {f.name: f for f in dataclasses.fields(RunConfig)}
    by_cli = {cli_parameter(name): name for name in fields}
    missing = sorted(name for name in fields if cli_parameter(name) not in params)
    assert not missing, f"RunConfig fields without an `ltbench run` option: {missing}"
    unmapped = sorted(set(params) - set(by_cli) - set(RUN_ONLY))
    assert not unmapped, f"`ltbench run` options that set no RunConfig field (nor are in cli.RUN_ONLY): {unmapped}"
    assert not set(RUN_ONLY) & set(by_cli)

    # no option given: the CLI builds exactly RunConfig()
    assert run_config({name: param.default for name, param in params.items()}) == RunConfig()

    def types(hint) -> set:
        return set(typing.get_args(hint) or (hint,)) - {type(None)}

    option_hints, field_hints = typing.get_type_hints(cli.run), typing.get_type_hints(RunConfig)
    for name in fields:
        option = types(option_hints[cli_parameter(name)])
        if name in ("retrain_before", "deadline") or Path in option or any(typing.get_origin(t) is list for t in option):
            continue  # paths and lists are converted to str (cli.FROM_CLI); --retrain and --time-limit give a time
        assert option == types(field_hints[name]), \
            f"--{cli_parameter(name)} parses {option_hints[cli_parameter(name)]}, RunConfig.{name} is {field_hints[name]}"


def test_each_cli_option_reaches_its_own_field():
    """A value given for one option lands in its field and nowhere else (a swapped keyword fails here)."""
    import dataclasses
    from pathlib import Path

    from ltbench.cli import run_config
    from ltbench.config import RunConfig, cli_parameter

    params = {name: param.default for name, param in _run_parameters().items()}
    base = run_config(params)
    given = {"method": "crt", "method_options": ["beta=0.3"], "dataset": "synthetic", "imbalance": 7.0,
             "profile": "step", "subset_seed": 3, "val_per_class": 4, "backbone": "resnet20", "pretrained": True,
             "recipe": "cpu", "epochs": 5, "stage2_epochs": 6, "batch_size": 8, "lr": 0.5, "stage2_lr": 0.25,
             "seed": 9, "device": "cpu", "precision": "fp32", "compile": True, "tensorboard": True,
             "data_root": Path("/data"), "out": Path("elsewhere"), "run_name": "x", "resume": True,
             "retrain_before": True, "plugins": [Path("p.py")], "eval_batch_size": 11, "workers": 2,
             "deadline": "90m", "test_every_epoch": True}
    assert set(given) == {f.name for f in dataclasses.fields(RunConfig)}, "a new field needs a value here"
    expected = {"method_options": {"beta": "0.3"}, "data_root": "/data", "out": "elsewhere", "plugins": ["p.py"]}
    for name, value in given.items():
        config = run_config({**params, cli_parameter(name): value})
        changed = {f.name for f in dataclasses.fields(RunConfig) if getattr(config, f.name) != getattr(base, f.name)}
        assert changed == {name}, f"--{cli_parameter(name)} changed {changed}"
        if name not in ("retrain_before", "deadline"):
            assert getattr(config, name) == expected.get(name, value)
    assert isinstance(run_config({**params, "retrain": True}).retrain_before, float)
    from ltbench.engine.interrupt import process_start

    assert run_config({**params, "time_limit": "90m"}).deadline == pytest.approx(process_start() + 5400)


def test_derived_field_lists_are_what_they_were():
    """The lists the engine, launcher and sweep used to restate, now read from RunConfig's field metadata."""
    from ltbench.config import cli_to_config, defining_fields, not_in_suites, resolved_later

    assert defining_fields() == ("method", "method_options", "dataset", "imbalance", "profile", "subset_seed",
                                 "val_per_class", "backbone", "pretrained", "recipe", "epochs", "stage2_epochs",
                                 "batch_size", "lr", "stage2_lr", "seed", "precision", "compile")
    assert resolved_later() == {"imbalance": None, "backbone": None, "recipe": None, "precision": "auto",
                                "val_per_class": None}
    assert set(not_in_suites()) == {"method", "dataset", "seed", "method_options", "out", "run_name", "resume",
                                    "retrain_before", "deadline"}
    assert cli_to_config() == {"option": "method_options", "compile_model": "compile", "results": "out",
                               "retrain": "retrain_before", "time_limit": "deadline", "log_test_acc": "test_every_epoch"}


# --- the typed data spec keeps every stage key ------------------------------------------------------------
def test_data_spec_and_stage_keys_are_unchanged():
    """The data part of the stage keys (now DataSpec) and the stage specs hash exactly as before DataSpec: these
    keys were computed with the code before it, so cached stage artifacts stay valid."""
    from ltbench.config import get_recipe
    from ltbench.data import DataSpec, build_data
    from ltbench.engine.plan import data_spec, stage_keys

    recipe = get_recipe("smoke")
    stages = [recipe.representation(), recipe.classifier(label_smoothing=0.1)]
    expected = {
        "digits-lt": ({"dataset": "digits-lt", "fingerprint": "b23b8c1b84955cdc-fd505af829f2de51", "imbalance": 20.0,
                       "profile": "exp", "subset_seed": 0, "train_size": 483, "val_per_class": 10},
                      ["722cc84a5a14", "e895df2cb312"]),
        "synthetic": ({"dataset": "synthetic", "fingerprint": "3d4067a33075e57f-d4a5ed36d9c91e8a", "imbalance": 10,
                       "profile": "exp", "subset_seed": 0, "train_size": 802, "val_per_class": 10},
                      ["a5f07cc6f22c", "50eb807d5f43"]),
    }
    for name, imbalance in (("digits-lt", None), ("synthetic", 10)):
        spec = data_spec(name, build_data(name, None, imbalance))
        assert spec == expected[name][0]
        assert stage_keys(spec, "resnet32", False, 0, "fp32", stages, ["core", "core+own"]) == expected[name][1]
    # a published long-tailed list: no LT rule, as the untyped info dict gave it
    assert DataSpec("imagenet-lt", 5).key("f") == {"dataset": "imagenet-lt", "imbalance": None, "profile": None,
                                                   "subset_seed": None, "val_per_class": None, "train_size": 5,
                                                   "fingerprint": "f"}
