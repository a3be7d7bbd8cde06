"""Task definitions, data loading (local files, the user's files, the hub) and tokenisation.

Typical use::

    data = load_task_data(config.data)            # TaskData: task spec, train, eval splits
    train = encode(data.train, tokenizer, config.data.max_length, config.data.cache_dir, "my-key")
"""

from .encoding import (EncodedDataset, PaddingCollator, encode, encode_split, encode_splits, text_collator,
                       tokenize)
from .files import read_table
from .labels import carve_validation, limit, sample_indices
from .loading import load_task_data
from .records import Examples, RawTable, TaskData
from .sources import resolve_data_dir
from .specs import GLUE_TASKS, TASKS, TaskSpec, custom_task, get_task, known_task_names

__all__ = [
    "EncodedDataset", "Examples", "GLUE_TASKS", "PaddingCollator", "RawTable", "TASKS",
    "TaskData", "TaskSpec", "carve_validation", "custom_task", "encode", "get_task", "known_task_names", "limit",
    "load_task_data", "read_table", "resolve_data_dir", "sample_indices", "tokenize", "encode_split",
    "encode_splits", "text_collator",
]
