"""`ltbench run --nproc N`: the same command again, under torchrun (torch.distributed.run), in N processes."""
from __future__ import annotations

import logging
import os

from ..config import cli_to_config
from ..errors import ConfigError
from .distributed import launched_by_torchrun

CLI_TO_CONFIG = cli_to_config()  # CLI parameter -> RunConfig field (RunConfig field metadata, config.setting)


def _given(ctx, name: str) -> bool:
    source = ctx.get_parameter_source(name)  # compared by name: typer may bring its own click
    return source is not None and source.name in ("COMMANDLINE", "ENVIRONMENT")


def explicit_options(ctx) -> set[str]:
    """RunConfig fields the user set on the command line (a resumed run checks them against its config)."""
    return {CLI_TO_CONFIG.get(name, name) for name in ctx.params if _given(ctx, name)}


def command_line(ctx, drop: tuple[str, ...] = ("nproc",)) -> list[str]:
    """The options of this invocation as arguments (only those the user gave: defaults stay defaults)."""
    args: list[str] = []
    for param in ctx.command.params:  # typer's options are click parameters of type "option"
        if param.param_type_name != "option" or param.name in drop or not _given(ctx, param.name):
            continue
        value = ctx.params[param.name]
        flag = max(param.opts, key=len)
        if getattr(param, "is_flag", False):
            if value:
                args.append(flag)
            elif param.secondary_opts:
                args.append(max(param.secondary_opts, key=len))
        elif getattr(param, "multiple", False):
            for item in value or ():
                args += [flag, str(item)]
        elif value is not None:
            args += [flag, str(value)]
    return args


def relaunch_with_torchrun(ctx, nproc: int) -> int:
    """Run ``ltbench run <same options>`` in ``nproc`` local processes through torchrun; its exit code."""
    if launched_by_torchrun():
        raise ConfigError("--nproc inside torchrun: torchrun already started the processes; drop --nproc")
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import get_args_parser, run

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, cores // nproc)))  # torchrun's default would be 1
    args = get_args_parser().parse_args(["--standalone", f"--nproc-per-node={nproc}", "--module", "ltbench", "run",
                                         *command_line(ctx)])
    elastic = logging.getLogger("torch.distributed.elastic")
    level = elastic.level
    elastic.setLevel(logging.CRITICAL)  # the workers print their own one-line errors; no agent report on top
    try:
        run(args)
        return 0
    except ChildFailedError as exc:
        return _exit_code([failure.exitcode for _, failure in sorted(exc.failures.items())])
    except SignalException as exc:
        return 128 + int(exc.sigval)
    finally:
        elastic.setLevel(level)


# SIGINT, SIGTERM, the time limit (interrupt.TIME_LIMIT_EXIT): the run saved its checkpoint and can be resumed
INTERRUPTED = (128 + 2, 128 + 15, 75)


def _exit_code(codes: list[int]) -> int:
    """One exit code for the failed workers (in rank order). A worker that stopped on an interrupt wins: the
    others were then stopped by torchrun (killed: negative code) or failed in a collective. Else the first
    code a worker returned; else the first death by a signal, as 128 + signal like a shell."""
    returned = [code for code in codes if code > 0]
    interrupted = [code for code in returned if code in INTERRUPTED]
    killed = [128 - code for code in codes if code < 0]
    return (interrupted or returned or killed or [1])[0]
