"""Reading a dataset from the Hugging Face hub, shared by the task families.

``datasets`` is imported only here and only when a family asks for the hub (no local data was
found): it is not a dependency of rankadapt. A missing package, no network, an unknown id or a bad
config all end in the family's own :class:`~rankadapt.core.errors.DataError`, built by the
``no_hub`` callable from a one-line reason, so each family can say which local files to pass instead.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..core.errors import DataError


def split_hub_name(value: str | None, default: tuple[str, str | None]) -> tuple[str, str | None]:
    """``data.hub_dataset`` as ``id`` or ``id:config``; ``id`` alone keeps the task's default config
    (a mirror of ``glue``, ``cnn_dailymail`` ...), ``id:`` asks for none."""
    if not value:
        return default
    if ":" in value:
        hub_id, config = value.split(":", 1)
        return hub_id, config or None
    return value, default[1]


def hub_label(hub_id: str, config: str | None) -> str:
    """``id/config`` (or ``id``), as messages and ``source`` strings name a hub dataset."""
    return f"{hub_id}/{config}" if config else hub_id


def datasets_module(name: str, no_hub: Callable[[str], DataError]) -> Any:
    """The ``datasets`` package, or ``no_hub``'s error when it is not installed."""
    try:
        import datasets
    except ImportError:
        raise no_hub(f"the `datasets` package needed to fetch {name!r} from the Hugging Face hub is not "
                     "installed") from None
    return datasets


def load_hub_dataset(hub_id: str, config: str | None, no_hub: Callable[[str], DataError]) -> Any:
    """Every split of ``hub_id`` (``datasets.load_dataset(hub_id, config)``: a DatasetDict)."""
    name = hub_label(hub_id, config)
    datasets = datasets_module(name, no_hub)
    try:
        return datasets.load_dataset(hub_id, config)
    except Exception as err:  # offline, unknown id, bad config: all mean "use local data instead"
        raise no_hub(f"loading {name!r} from the hub failed ({type(err).__name__}: {err})") from None
