"""The command line: a table of commands whose workers are imported only when they run.

``kennel --help`` (and any light command) never imports TensorFlow or MLflow. Every command
exits 0 on success, 2 on a user error (one line on stderr, no traceback) and 1 on an internal
failure (one line on stderr; the traceback goes to the log at DEBUG and to the log file).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import logging
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import NoReturn

from kennel import collector
from kennel.environment import load_dotenv_once, telemetry_off_by_default
from kennel.errors import NotAvailableError
from kennel.jobs import run_job, start_logging

logger = logging.getLogger("kennel")


@dataclass(frozen=True)
class Command:
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    handler: str
    """``module:function`` called with the parsed arguments; returns an exit code."""


def _config_args(parser: argparse.ArgumentParser, *, required: bool = False) -> None:
    parser.add_argument(
        "-c",
        "--config",
        required=required,
        help="YAML config file; a bare name like dog.yaml resolves under configs/",
    )
    parser.add_argument(
        "overrides",
        nargs="*",
        metavar="key=value",
        help="config overrides, e.g. model.params.num_leaves=63 (highest precedence)",
    )


def _output_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--output-dir", help="folder for this run's files (default: a new one)")
    parser.add_argument("--output-json", help="also write the machine-readable result here")


def _args_config(parser: argparse.ArgumentParser) -> None:
    _config_args(parser)
    parser.add_argument("--explain", action="store_true", help="show where every value came from")


def _args_train(parser: argparse.ArgumentParser) -> None:
    _config_args(parser)
    _output_args(parser)
    parser.add_argument(
        "--log-model-if",
        metavar="METRIC>=VALUE",
        help="log the model and plots only when a metric is at least this good, e.g. "
        "val_roc_auc>=0.99 or val_rmse<=3.5 (the search uses it for search.log_models="
        "improving); params, metrics and the other artifacts are logged either way",
    )


def _args_evaluate(parser: argparse.ArgumentParser) -> None:
    _config_args(parser)
    parser.add_argument(
        "--model-uri",
        required=True,
        help="runs:/<id>/model, models:/<name>/<version> or models:/<name>@<alias>",
    )
    parser.add_argument(
        "--data",
        help="CSV/Parquet file with the target to evaluate on (default: the test split)",
    )
    parser.add_argument(
        "--explain",
        action="store_true",
        help="also write every holdout row's contributions (explanations.parquet, logged)",
    )
    _output_args(parser)


def _args_predict(parser: argparse.ArgumentParser) -> None:
    _config_args(parser)
    parser.add_argument("--model-uri", required=True, help="any MLflow model URI")
    parser.add_argument(
        "--input",
        required=True,
        help="CSV or Parquet file of raw rows, or a Parquet data set (folder, glob, URL)",
    )
    parser.add_argument(
        "--output",
        required=True,
        help="CSV or Parquet file to write (with resource.cluster: a folder)",
    )
    parser.add_argument("--chunk-size", type=int, default=100_000, help="rows per chunk")
    parser.add_argument(
        "--provenance",
        action="store_true",
        help="add model_name, model_version, model_alias and scored_at columns (as captured "
        "requests have), so the scores can be monitored with kennel monitor",
    )
    parser.add_argument(
        "--explain",
        action="store_true",
        help="add contrib_<column> per input column and contrib_base: per row they sum to "
        "the model's raw output (log-odds, class margin or value)",
    )
    parser.add_argument(
        "--no-progress",
        action="store_true",
        help="hide the progress bar (hidden anyway when stderr is not a terminal)",
    )
    parser.add_argument("--output-json", help="also write the machine-readable result here")


def _args_search(parser: argparse.ArgumentParser) -> None:
    _config_args(parser)
    parser.add_argument("--n-trials", type=int, help="number of trials (search.n_trials)")
    parser.add_argument("--n-jobs", type=int, help="trials at once (search.n_jobs)")
    parser.add_argument("--storage", help="Optuna storage URL shared by several workers")
    parser.add_argument("--study-name", help="Optuna study name (join an existing study)")
    _output_args(parser)


def _args_promote(parser: argparse.ArgumentParser) -> None:
    _config_args(parser)
    parser.add_argument(
        "--version", type=int, help="registered model version to promote (not with --rollback)"
    )
    parser.add_argument("--to", required=True, dest="env", help="environment alias, e.g. dev")
    parser.add_argument(
        "--model-name",
        help="registered model (default: registry.model_name, else the data set's name)",
    )
    parser.add_argument("--force", action="store_true", help="skip the gate (still recorded)")
    parser.add_argument(
        "--dry-run", action="store_true", help="show the decision; change and record nothing"
    )
    parser.add_argument(
        "--rollback", action="store_true", help="return the alias to its previous holder"
    )
    parser.add_argument("--data", help="holdout file for the gate (default: the test split)")
    parser.add_argument("--output-json", help="also write the decision here")
    parser.epilog = "exit codes: 0 moved or already there, 3 refused by the gate, 2 bad input"


def _args_runs(parser: argparse.ArgumentParser) -> None:
    _config_args(parser)
    parser.add_argument(
        "action",
        choices=["cleanup"],
        help="cleanup: mark FAILED the RUNNING runs whose process on this machine is gone",
    )
    parser.add_argument(
        "--experiment",
        action="append",
        help="only this experiment (repeatable; default: every experiment of the store)",
    )
    parser.add_argument(
        "--all", action="store_true", help="every experiment of the store (the default)"
    )
    parser.add_argument("--dry-run", action="store_true", help="show what would be marked")
    parser.add_argument("--output-json", help="also write the result here")


def _args_compare(parser: argparse.ArgumentParser) -> None:
    _config_args(parser)
    parser.add_argument(
        "--experiment",
        help="experiment name (default: the one kennel train files into, else the one with "
        "the latest kennel run)",
    )
    parser.add_argument(
        "-n", "--last", type=int, default=10, help="how many of the latest runs (default: 10)"
    )
    parser.add_argument("--run-id", action="append", help="compare these runs (repeatable) instead")
    parser.add_argument(
        "--kind",
        action="append",
        choices=("training", "trial", "evaluation", "search"),
        help="which runs (repeatable; default: training and trial)",
    )
    parser.add_argument(
        "--wide", action="store_true", help="every column, however wide (default: fit 120)"
    )
    parser.add_argument("--output-json", help="also write the rows here")


def _args_serve(parser: argparse.ArgumentParser) -> None:
    _config_args(parser)
    parser.add_argument("--env", required=True, help="environment alias to serve")
    parser.add_argument("--model-name", help="registered model (default: registry.model_name)")
    parser.add_argument("-p", "--port", type=int, default=5001, help="port (default: 5001)")
    parser.add_argument(
        "-h", "--host", default="127.0.0.1", help="interface to bind (default: 127.0.0.1)"
    )
    parser.add_argument(
        "-w", "--workers", type=int, default=1, help="server worker processes (default: 1)"
    )
    parser.add_argument(
        "--timeout", type=int, default=60, help="seconds allowed per request (default: 60)"
    )
    parser.add_argument(
        "--max-request-mb",
        type=float,
        default=32,
        help="larger request bodies get 413 (default: 32)",
    )
    parser.add_argument(
        "--max-columns",
        type=int,
        default=1024,
        help="requests naming more columns get 413 (default: 1024)",
    )
    parser.add_argument(
        "--capture",
        metavar="PATH",
        help="record every scored row, its outputs and a request id as Parquet files in PATH "
        "(a folder or fsspec URL; setting capture.path)",
    )
    parser.add_argument(
        "--capture-sample",
        type=float,
        metavar="FRACTION",
        help="record this share of requests, e.g. 0.1 (setting capture.sample; default 1)",
    )
    parser.add_argument(
        "--print-command", action="store_true", help="print the server command and exit"
    )


def _args_inspect(parser: argparse.ArgumentParser) -> None:
    _config_args(parser)
    parser.add_argument("--output-json", help="also write the report here (as JSON)")
    parser.epilog = (
        "e.g. kennel inspect data.source=sales.csv data.target=churn; the table names what "
        "each column becomes and why, as a training run would decide (no model is trained)"
    )


def _args_monitor(parser: argparse.ArgumentParser) -> None:
    _config_args(parser)
    parser.add_argument(
        "--model-uri",
        required=True,
        help="the model whose reference profile the rows are compared with, e.g. "
        "models:/<name>@production",
    )
    parser.add_argument(
        "--input",
        required=True,
        help="a capture folder (kennel serve --capture), a CSV/Parquet file or a Parquet data "
        "set (with resource.cluster: counted on the cluster)",
    )
    parser.add_argument(
        "--labels",
        help="CSV/Parquet file of labels for scored rows: the target column and the key "
        "named by --on",
    )
    parser.add_argument("--on", help="the key joining --labels to the rows (default: request_id)")
    _output_args(parser)
    parser.epilog = "exit codes: 0 no drift past the thresholds, 3 retrain, 2 bad input"


COMMANDS: dict[str, Command] = {
    "config": Command("print the resolved configuration", _args_config, "kennel.cli.config:run"),
    "train": Command(
        "train, evaluate, log and register a model", _args_train, "kennel.cli.train:run"
    ),
    "evaluate": Command(
        "evaluate a model URI on the test split or a file",
        _args_evaluate,
        "kennel.cli.evaluate:run",
    ),
    "predict": Command("batch prediction from a file", _args_predict, "kennel.cli.predict:run"),
    "inspect": Command(
        "what kennel reads from a table and makes of each column (no training)",
        _args_inspect,
        "kennel.cli.inspect:run",
    ),
    "search": Command(
        "hyperparameter search, trials in separate processes",
        _args_search,
        "kennel.cli.search:run",
    ),
    "promote": Command(
        "move an environment alias to a model version (gated)",
        _args_promote,
        "kennel.cli.promote:run",
    ),
    "runs": Command(
        "housekeeping of runs: close the ones a killed process left RUNNING",
        _args_runs,
        "kennel.cli.runs:run",
    ),
    "compare": Command(
        "the latest runs of an experiment (or given runs) side by side",
        _args_compare,
        "kennel.cli.compare:run",
    ),
    "monitor": Command(
        "compare rows (captured, scored or new) with a model's reference; exit 3 to retrain",
        _args_monitor,
        "kennel.cli.monitor:run",
    ),
    "serve": Command(
        "serve the model of an environment with MLflow's scoring server",
        _args_serve,
        "kennel.cli.serve:run",
    ),
}


class Parser(argparse.ArgumentParser):
    """argparse with kennel's error style: one line naming the bad value, a "did you mean"
    when a command or option is close to a real one, where to look, and exit code 2 (not
    argparse's usage block, which for an option after the command showed kennel's usage
    rather than the command's)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {self._hinted(message)}; see '{self.prog} --help'\n")

    def _hinted(self, message: str) -> str:
        from kennel.suggest import did_you_mean

        if message.startswith("argument COMMAND: invalid choice:"):
            word = message.split("'")[1]
            return f"unknown command '{word}'" + did_you_mean(word, COMMANDS)
        if message.startswith("unrecognized arguments: "):
            # Matched without the dashes, which every option shares.
            long = {o[2:] for a in self._actions for o in a.option_strings if o[:2] == "--"}
            words = message.removeprefix("unrecognized arguments: ").split()
            hints = [
                did_you_mean(w.split("=")[0].lstrip("-"), long).replace("'", "'--", 1)
                for w in words
                if w.startswith("--")
            ]
            return message + "".join(hints)
        return message


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="kennel",
        description="MLflow-tracked machine learning for tabular data.",
    )
    parser.add_argument("--version", action="version", version=_version())
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, command in COMMANDS.items():
        conflict = "resolve" if name == "serve" else "error"
        child = sub.add_parser(
            name,
            help=command.help,
            description=command.help,
            conflict_handler=conflict,
            add_help=name != "serve",
        )
        if name == "serve":
            child.add_argument("--help", action="help", help="show this help message and exit")
        command.add_arguments(child)
    return parser


def _version() -> str:
    from kennel import __version__

    return f"kennel {__version__}"


def _split_extras(args: argparse.Namespace, extras: Sequence[str], parser: argparse.ArgumentParser):
    """Accept ``key=value`` overrides anywhere on the line; anything else is an error of the
    command's own parser (its name and options in the message)."""
    command = _subparser(parser, args.command)
    unknown = [e for e in extras if "=" not in e or e.startswith("-")]
    if unknown:
        command.error(f"unrecognized arguments: {' '.join(unknown)}")
    if hasattr(args, "overrides"):
        args.overrides = [*args.overrides, *extras]
    elif extras:
        command.error(f"unrecognized arguments: {' '.join(extras)}")


def _subparser(parser: argparse.ArgumentParser, name: str) -> argparse.ArgumentParser:
    """The parser of command ``name`` (``parser`` itself if it has none)."""
    for action in parser._subparsers._group_actions if parser._subparsers else ():
        if isinstance(action, argparse._SubParsersAction) and name in action.choices:
            return action.choices[name]
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``kennel`` and ``python run.py``; returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args, extras = parser.parse_known_args(argv)
    _split_extras(args, extras, parser)
    command = COMMANDS[args.command]
    load_dotenv_once()
    telemetry_off_by_default()
    start_logging()
    return run_job(args.command, lambda: _handler(args.command, command.handler)(args))


def _handler(name: str, handler: str) -> Callable[[argparse.Namespace], int]:
    """The command's ``run`` function, imported now (a light command stays light)."""
    module_name, _, func = handler.partition(":")
    try:
        with collector.paused():
            module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name == module_name:
            raise NotAvailableError(f"'kennel {name}' is not available yet") from None
        raise
    return getattr(module, func)


def start() -> None:
    """``run.py``'s call: run and exit with the command's code."""
    collector.own_process()
    fast_exit(main())


def fast_exit(code: int) -> None:
    """Exit like ``sys.exit`` (threads joined, ``atexit`` handlers run, logs and streams
    flushed) but skip tearing the interpreter down: for the modules a command loads (MLflow,
    scikit-learn, pandas, LightGBM) that takes about a second, after the work is done."""
    import atexit
    import threading

    try:
        # What the interpreter does first at exit: run threading's exit hooks (they tell
        # idle pool workers, e.g. MLflow's download threads, to stop), join other threads.
        shutdown = getattr(threading, "_shutdown", None)
        if shutdown is not None:
            shutdown()
        else:
            for thread in threading.enumerate():
                if thread is not threading.main_thread() and not thread.daemon:
                    thread.join()
        atexit._run_exitfuncs()
        logging.shutdown()
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
    finally:
        os._exit(code)


if __name__ == "__main__":
    start()
