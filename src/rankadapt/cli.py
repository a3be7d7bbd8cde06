"""The ``rankadapt`` command line (Typer).

    rankadapt train [CONFIG.yaml] [key=value ...]
    rankadapt eval RUN_OR_ADAPTER_DIR [key=value ...]
    rankadapt predict ADAPTER_DIR TEXT... | --file FILE
    rankadapt config show|validate [CONFIG.yaml] [key=value ...]
    rankadapt export RUN_DIR --merged OUT_DIR

Every user mistake surfaces as a :class:`~rankadapt.errors.RankAdaptError`: the CLI prints its
message and exits with status 2, never a traceback.
"""

from __future__ import annotations

import functools
import json
import os
import sys
from pathlib import Path
from typing import Optional

import typer

from .errors import ConfigError, RankAdaptError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Parameter-efficient fine-tuning of encoder classifiers: LoRA, AdaLoRA, ElaLoRA, SoRA, RM-LoRA.")
config_app = typer.Typer(no_args_is_help=True, help="Show or validate a resolved configuration.")
app.add_typer(config_app, name="config")

ARGS_HELP = "An optional CONFIG.yaml first, then dotted overrides such as method.lora_r=4 train.seed=1."


def _user_errors(func):
    """Turn user-facing errors into a message and exit status 2."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except RankAdaptError as err:
            typer.echo(f"error: {err}", err=True)
            raise typer.Exit(2) from None
        except KeyboardInterrupt:
            typer.echo("interrupted; continue a training run with train.resume=true", err=True)
            raise typer.Exit(130) from None

    return wrapper


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
    from .config import load_config

    path, overrides = _split_args(args)
    return load_config(path, overrides)


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
@_user_errors
def train(args: Optional[list[str]] = typer.Argument(None, help=ARGS_HELP, metavar="[CONFIG.yaml] [KEY=VALUE]...")):
    """Fine-tune a model; writes config.yaml, metrics.jsonl, results.json, adapter/ and checkpoint/."""
    from .train import train as run_training

    config = _load(args)
    results = run_training(config)
    if _is_main_process():
        out = config.resolved_output_dir()
        main = results["metric_for_best"]
        final = results["final_metrics"].get(main)
        typer.echo(f"\n{results['method']} on {results['task']}: {main} {final:.4f} (final), "
                   f"{results['best_metrics'].get(main, float('nan')):.4f} (best, step {results['best_step']})")
        typer.echo(f"results: {out / 'results.json'}")
        exported = out / ("adapter" if (out / "adapter").exists() else "model")
        if exported.exists():
            typer.echo(f"{exported.name}: {exported}")


@app.command("eval", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
@_user_errors
def evaluate(path: Path = typer.Argument(..., help="A run directory, adapter directory or model directory."),
             overrides: Optional[list[str]] = typer.Argument(None, help="Dotted overrides, e.g. data.eval_limit=500."),
             output: Optional[Path] = typer.Option(None, "--output", "-o", help="Also write the metrics to this JSON file.")):
    """Evaluate a trained run or adapter on its task's eval split(s) (or data.eval_file)."""
    from .evaluation import evaluate_path

    metrics = evaluate_path(path, overrides or [])
    text = json.dumps(metrics, indent=2)
    typer.echo(text)
    if output:
        output.write_text(text + "\n")


@app.command()
@_user_errors
def predict(path: Path = typer.Argument(..., help="A run, adapter or model directory."),
            texts: Optional[list[str]] = typer.Argument(None, help="Texts to classify."),
            file: Optional[Path] = typer.Option(None, "--file", "-f", help="A text file, one input per line."),
            max_length: int = typer.Option(128, help="Truncate inputs to this many tokens.")):
    """Classify texts; prints one JSON object per input (label and probability)."""
    from .evaluation import predict_path

    inputs = list(texts or [])
    if file is not None:
        if not file.is_file():
            raise ConfigError(f"--file {file} does not exist")
        inputs += [line for line in file.read_text().splitlines() if line.strip()]
    if not inputs:
        raise ConfigError("give texts to classify as arguments or with --file")
    for record in predict_path(path, inputs, max_length=max_length):
        typer.echo(json.dumps(record))


@app.command()
@_user_errors
def export(run_dir: Path = typer.Argument(..., help="A run or adapter directory."),
           merged: Path = typer.Option(..., "--merged", help="Write a plain transformers model with ΔW folded in here.")):
    """Export a trained adapter as a merged transformers model (no adapter cost at inference)."""
    from .evaluation import export_merged_path

    out = export_merged_path(run_dir, merged)
    typer.echo(f"merged model: {out}")


@config_app.command("show", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
@_user_errors
def config_show(args: Optional[list[str]] = typer.Argument(None, help=ARGS_HELP, metavar="[CONFIG.yaml] [KEY=VALUE]...")):
    """Print the resolved configuration as YAML."""
    config = _load(args)
    typer.echo(config.to_yaml().rstrip())
    typer.echo(f"# output_dir resolves to {config.resolved_output_dir()}")


@config_app.command("validate", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
@_user_errors
def config_validate(args: Optional[list[str]] = typer.Argument(None, help=ARGS_HELP, metavar="[CONFIG.yaml] [KEY=VALUE]...")):
    """Check a configuration; exit status 2 with the problems if it is invalid."""
    config = _load(args)
    typer.echo(f"ok: {config.method.name} on {config.data.task} with {config.model.name}")


def _is_main_process() -> bool:
    return os.environ.get("RANK", "0") == "0"


def main() -> None:
    app(prog_name="rankadapt")


if __name__ == "__main__":
    sys.exit(main())
