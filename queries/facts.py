"""What a snapshot keeps about a model for classification: its facts (`Facts`, one row's evidence columns),
and which of its file names it keeps (`weight_files`). The rules test these (queries/conditions.py); ingest
keeps them (ingest/records.py).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

# ------------------------------------------------------------------------------------------------------
# The facts a rule reads: the snapshot's evidence columns for one model.
# ------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Facts:
    """What a snapshot keeps about a model for classification (None: the source did not say)."""

    tags: Sequence[str] | None = None
    files: Sequence[str] | None = None  # the `weight_files` column: names a rule can read
    library_name: str | None = None
    model_type: str | None = None  # config.model_type
    architectures: Sequence[str] | None = None  # config.architectures
    auto_model: str | None = None  # transformersInfo.auto_model

    @classmethod
    def of_row(cls, row: Mapping[str, Any]) -> Facts:
        """The facts of a snapshot row (or of `ingest.records.parse_record`'s row), by column name."""
        return cls(
            tags=row.get("tags"),
            files=row.get("weight_files"),
            library_name=row.get("library_name"),
            model_type=row.get("model_type"),
            architectures=row.get("architectures"),
            auto_model=row.get("auto_model"),
        )


# The columns a snapshot keeps for the rules, in table order after the model's own metadata.
FACT_COLUMNS = ("tags", "library_name", "weight_files", "model_type", "architectures", "auto_model")


# ------------------------------------------------------------------------------------------------------
# File names. A snapshot keeps only the names that can hold weights or that a rule reads (`weight_files`):
# 84 % fewer names on the 2022 crawl, so a 2-million-model snapshot stays small, and the neutral formats
# too, so new rules can be recomputed from old snapshots (tests check that no name a rule matches is lost).
# ------------------------------------------------------------------------------------------------------

WEIGHT_FILE = re.compile(
    r"\.(bin|pt|pth|h5|hdf5|pb|pbtxt|tflite|msgpack|safetensors|onnx|onnx_data|ort|gguf|ggml|keras|ckpt|pkl"
    r"|pickle|joblib|npz|npy|mlmodel|nemo|ot|model|tar|zip|gguf\.part\d+of\d+)$"
)

# Names with a weight format's extension that hold no model weights: tokenizers, optimizer and scheduler
# state, random-number state, the Trainer's arguments. Used only to tell "holds weights" from "holds none".
NOT_WEIGHTS = (
    r"(^|/)(tokenizer|spiece|sentencepiece[^/]*|[^/]*bpe)\.model$"
    r"|(^|/)(training_args|optimizer|scheduler|scaler|rng_state[^/]*|random_states[^/]*|trainer_state)\.(bin|pt|pth|pkl)$"
    r"|(^|/)(global_step[^/]*/)?[^/]*optim_states\.pt$"
)
NOT_WEIGHTS_RE = re.compile(NOT_WEIGHTS)


def weight_files(files: Sequence[str] | None) -> list[str] | None:
    """The names in `files` that can hold weights (None stays None: the source did not list files)."""
    if files is None:
        return None
    return [f for f in files if WEIGHT_FILE.search(f.lower())]


def holds_weights(files: Sequence[str] | None) -> bool:
    """Whether any listed file holds model weights (not a tokenizer, optimizer state or Trainer arguments)."""
    return any(not NOT_WEIGHTS_RE.search(f.lower()) for f in weight_files(files) or ())
