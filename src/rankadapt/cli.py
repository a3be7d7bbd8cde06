"""The ``rankadapt`` command line (Typer).

    rankadapt train [CONFIG.yaml] [key=value ...]
    rankadapt eval RUN_OR_ADAPTER_DIR [key=value ...]
    rankadapt predict ADAPTER_DIR TEXT... | --file FILE
    rankadapt config show|validate [CONFIG.yaml] [key=value ...]
    rankadapt export RUN_DIR --merged OUT_DIR
    rankadapt sweep SWEEP.yaml [key=value ...]            (rankadapt.experiments)
    rankadapt report RUNS_DIR
    rankadapt run-glue --model_name_or_path ... --task_name ... [official run_glue.py flags]

Every user mistake surfaces as a :class:`~rankadapt.core.errors.RankAdaptError`: the CLI prints its
message and exits with status 2, never a traceback.
"""

from __future__ import annotations

import errno
import functools
import json
import logging
import sys
from pathlib import Path
from typing import Optional

import typer

from .core.errors import ConfigError, RankAdaptError
from .core.messages import is_main_process, setup_messages

log = logging.getLogger(__name__)

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Parameter-efficient fine-tuning (LoRA, AdaLoRA, ElaLoRA, SoRA, RM-LoRA) of text and image classifiers and summarisers.")
config_app = typer.Typer(no_args_is_help=True, help="Show or validate a resolved configuration.")
app.add_typer(config_app, name="config")

ARGS_HELP = "An optional CONFIG.yaml first, then dotted overrides such as method.lora_r=4 train.seed=1."


def _user_errors(func):
    """Set up the status messages (stderr, :mod:`rankadapt.core.messages`), then turn user-facing errors
    into a message and exit status 2."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        setup_messages()
        try:
            return func(*args, **kwargs)
        except RankAdaptError as err:
            log.error("%s", err)
            raise typer.Exit(2) from None
        except KeyboardInterrupt:
            log.info("interrupted; continue a training run with train.resume=true")
            raise typer.Exit(130) from None
        except OSError as err:
            if err.errno not in _STORAGE_ERRORS:
                raise
            log.error("%s", _storage_message(err))
            raise typer.Exit(2) from None

    return wrapper


_STORAGE_ERRORS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM}


def _storage_message(err: OSError) -> str:
    """A failed write (disk full, quota, read-only file system, permissions): what to do about it.
    Checkpoints and exports are written aside and swapped in, so the last complete ones are intact."""
    where = f": {err.filename}" if err.filename else ""
    return (f"{err.strerror or err}{where}. Free space (or fix the permissions) and rerun; a training run continues "
            "from its last complete checkpoint with train.resume=true")


def _split_args(args: list[str] | None) -> tuple[str | None, list[str]]:
    """``[CONFIG.yaml] key=value ...``: a first argument without '=' is the config file."""
    args = list(args or [])
    if args and "=" not in args[0]:
        path, rest = args[0], args[1:]
    else:
        path, rest = None, args
    stray = [a for a in rest if "=" not in a]
    if stray:
        raise ConfigError(f"expected key=value overrides after the config file, got {' '.join(stray)!r}")
    return path, rest


def _load(args: list[str] | None):
    from .core.config_files import load_config

    path, overrides = _split_args(args)
    return load_config(path, overrides)


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
@_user_errors
def train(args: Optional[list[str]] = typer.Argument(None, help=ARGS_HELP, metavar="[CONFIG.yaml] [KEY=VALUE]...")):
    """Fine-tune a model; writes config.yaml, metrics.jsonl, results.json, adapter/ and checkpoint/."""
    from .recipes.finetune import train as run_training

    config = _load(args)
    results = run_training(config)
    if is_main_process():
        out = config.resolved_output_dir()
        typer.echo("\n" + final_line(results))
        typer.echo(f"results: {out / 'results.json'}")
        exported = out / ("adapter" if (out / "adapter").exists() else "model")
        if exported.exists():
            typer.echo(f"{exported.name}: {exported}")


def final_line(results: dict) -> str:
    """``lora on mrpc: accuracy 0.7402, f1 0.8291 (final); accuracy 0.7500, f1 0.8333 (best, step 40)``:
    every metric of the task (the eval loss left out), main metric first."""
    main = results["metric_for_best"]

    def metrics(values: dict) -> str:
        names = [main] * (main in values) + [k for k in values if k != main and not k.endswith("loss")]
        return ", ".join(f"{name} {values[name]:.4f}" for name in names)

    line = f"{results['method']} on {results['task']}: {metrics(results['final_metrics'])} (final)"
    if results.get("best_metrics") and results["best_step"] != results.get("steps"):
        line += f"; {metrics(results['best_metrics'])} (best, step {results['best_step']})"
    return line


@app.command("eval", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
@_user_errors
def evaluate(path: Path = typer.Argument(..., help="A run directory, adapter directory or model directory."),
             overrides: Optional[list[str]] = typer.Argument(None, help="Dotted overrides, e.g. data.eval_limit=500."),
             output: Optional[Path] = typer.Option(None, "--output", "-o", help="Also write the metrics to this JSON file."),
             lora_path: Optional[Path] = typer.Option(None, "--lora_path", "--lora-path", help=(
                 "A microsoft/LoRA loralib checkpoint to evaluate on PATH, the base model; its alpha is "
                 "method.lora_alpha (default 16)."))):
    """Evaluate a trained run or adapter on its task's eval split(s) (or data.eval_file)."""
    from .recipes.evaluate import evaluate_path

    if lora_path is not None:
        from .recipes.evaluate import evaluate_loralib

        metrics = evaluate_loralib(_load([f"model.name={path}", "method.name=lora", *(overrides or [])]), lora_path)
    else:
        metrics = evaluate_path(path, overrides or [])
    if not is_main_process():  # under torchrun every process evaluates its shard; one reports
        return
    text = json.dumps(metrics, indent=2)
    typer.echo(text)
    if output:
        output.write_text(text + "\n")


@app.command()
@_user_errors
def predict(path: Path = typer.Argument(..., help="A run, adapter or model directory."),
            texts: Optional[list[str]] = typer.Argument(None, help="Texts, documents or image files, as the run's task takes."),
            file: Optional[Path] = typer.Option(None, "--file", "-f", help="A text file, one input per line."),
            max_length: Optional[int] = typer.Option(None, "--max-length", "--max_length", min=8, help=(
                "Truncate inputs to this many tokens (default: the run's data.max_length)."))):
    """Predict with the run's own settings (text: max length, labels, TAB-separated pairs; images: top-k
    labels; summaries: generation settings); prints one JSON object per input."""
    from .recipes.evaluate import predict_path

    inputs = list(texts or [])
    if file is not None:
        if not file.is_file():
            raise ConfigError(f"--file {file} does not exist")
        try:
            inputs += [line for line in file.read_text(encoding="utf-8").splitlines() if line.strip()]
        except UnicodeDecodeError as err:
            raise ConfigError(f"--file {file} is not UTF-8 text (byte {err.start}: {err.reason}); convert it, e.g. "
                              f"iconv -f latin1 -t utf-8 {file}") from None
    if not inputs:
        raise ConfigError("give the inputs (texts, documents or image files) as arguments or with --file")
    for record in predict_path(path, inputs, max_length=max_length, echo=log.info):
        typer.echo(json.dumps(record))


@app.command()
@_user_errors
def export(run_dir: Path = typer.Argument(..., help="A run or adapter directory."),
           merged: Path = typer.Option(..., "--merged", help="Write a plain transformers model with ΔW folded in here.")):
    """Export a trained adapter as a merged transformers model (no adapter cost at inference)."""
    from .recipes.evaluate import export_merged_path

    out = export_merged_path(run_dir, merged)
    typer.echo(f"merged model: {out}")


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
@_user_errors
def sweep(path: Path = typer.Argument(..., help="A sweep file, e.g. configs/sweeps/glue-small.yaml."),
          overrides: Optional[list[str]] = typer.Argument(None, help=(
              "key=value: model./data./method./train. keys apply to every run; seeds=0,1 methods=lora,none "
              "tasks=rte output_root=DIR select and redirect.")),
          dry_run: bool = typer.Option(False, "--dry-run", help="List the runs and their status; run nothing."),
          rerun_changed: bool = typer.Option(False, "--rerun-changed", help="Retrain finished runs whose settings changed."),
          report: bool = typer.Option(False, "--report", help="Write the report into the output root at the end.")):
    """Run a grid of methods x seeds x tasks x models, one run directory each; rerun the command to continue."""
    from .experiments.runner import run_sweep
    from .experiments.sweep import load_sweep

    grid = load_sweep(path, overrides or [])
    try:
        run_sweep(grid, rerun_changed=rerun_changed, dry_run=dry_run, echo=typer.echo)
    except KeyboardInterrupt:
        log.info("interrupted; rerun the same command to continue: finished runs are skipped and the interrupted "
                 "one resumes from its checkpoint")
        raise typer.Exit(130) from None
    if report and not dry_run:
        from .experiments.report import build_report

        typer.echo(f"report: {build_report(grid.root)['html']}")


@app.command()
@_user_errors
def report(runs_dir: Path = typer.Argument(..., help="A directory of runs (a sweep's output root)."),
           output: Optional[Path] = typer.Option(None, "--output", "-o", help="Where to write (default: RUNS_DIR)."),
           title: Optional[str] = typer.Option(None, help="Report title (default: the sweep's name)."),
           use: str = typer.Option("final", help="final: metrics after the last step; best: best evaluation.")):
    """Write report.md and a self-contained report.html (tables, plots) for the runs under RUNS_DIR."""
    from .experiments.report import build_report

    paths = build_report(runs_dir, output, title, use)
    typer.echo(f"markdown: {paths['markdown']}\nhtml: {paths['html']}")


@app.command("run-glue", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
@_user_errors
def run_glue(args: Optional[list[str]] = typer.Argument(None, metavar="--FLAG VALUE ... [KEY=VALUE]...", help=(
                 "The flags of the official run_glue.py scripts, then optional rankadapt key=value overrides.")),
             show_config: bool = typer.Option(False, "--show-config", help="Print the resolved configuration; run nothing.")):
    """Run an official run_glue.py command line (microsoft/LoRA, AdaLoRA, ElaLoRA, SoRA, RM-LoRA flags)."""
    from .experiments.run_glue import parse_glue_args, run_glue_command

    command = parse_glue_args(args or [])
    for note in command.notes:
        log.info("note: %s", note)
    if show_config:
        typer.echo(command.config.to_yaml().rstrip())
        typer.echo(f"# action: {command.action}")
        return
    result = run_glue_command(command)
    if command.action == "eval-loralib":
        typer.echo(json.dumps(result, indent=2))
        return
    typer.echo(f"\n{final_line(result)}\nresults: {command.config.resolved_output_dir() / 'results.json'}")


@config_app.command("show", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
@_user_errors
def config_show(args: Optional[list[str]] = typer.Argument(None, help=ARGS_HELP, metavar="[CONFIG.yaml] [KEY=VALUE]..."),
                help_keys: bool = typer.Option(False, "--help-keys", help=(
                    "Print every key with its default, allowed values and meaning (the method's own keys for the "
                    "resolved method.name) instead of the values.")),
                all_methods: bool = typer.Option(False, "--all", help="With --help-keys: the keys of every method.")):
    """Print the resolved configuration as YAML, or what each key means (--help-keys)."""
    config = _load(args)
    if help_keys:
        from .core.config_help import describe_keys

        typer.echo(describe_keys(config, all_methods=all_methods))
        return
    typer.echo(config.to_yaml().rstrip())
    typer.echo(f"# output_dir resolves to {config.resolved_output_dir()}")


@config_app.command("validate", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
@_user_errors
def config_validate(args: Optional[list[str]] = typer.Argument(None, help=ARGS_HELP, metavar="[CONFIG.yaml] [KEY=VALUE]...")):
    """Check a configuration (or a sweep file: every run of it); exit status 2 with the problems if invalid."""
    from .experiments.sweep import is_sweep_file, load_sweep

    path, overrides = _split_args(args)
    if path and is_sweep_file(path):
        grid = load_sweep(path, overrides)
        typer.echo(f"ok: sweep {grid.name} with {len(grid.runs)} runs under {grid.root}")
        return
    config = _load(args)
    typer.echo(f"ok: {config.method.name} on {config.data.task} with {config.model.name}")


def main() -> None:
    from .core.distributed import shutdown

    try:
        app(prog_name="rankadapt")
    except SystemExit as done:
        # Only after success: after a failure another process may still be inside a collective,
        # and tearing the group down would wait for it instead of exiting with the error.
        if done.code in (0, None):
            shutdown()
        raise
    else:
        shutdown()


if __name__ == "__main__":
    sys.exit(main())
