"""``python -m rankadapt`` (and ``torchrun -m rankadapt``) runs the command line."""

from .cli import main

main()
