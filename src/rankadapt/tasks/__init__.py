"""Task families: how examples are read, encoded, batched and scored (:mod:`.base`).

One registration line per family; importing ``rankadapt`` imports this package, so every family is
registered before a configuration is validated (``task_options:`` depends on it).
"""

from .base import TaskFamily, family_for_task, family_names, get_family, known_tasks, register_family
from .image_classification.family import ImageClassificationFamily
from .summarization.family import SummarizationFamily
from .text_classification.family import TextClassificationFamily

register_family(TextClassificationFamily())
register_family(SummarizationFamily())
register_family(ImageClassificationFamily())

__all__ = ["TaskFamily", "family_for_task", "family_names", "get_family", "known_tasks", "register_family"]
