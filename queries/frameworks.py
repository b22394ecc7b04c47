"""Framework classification: which of PyTorch, TensorFlow and JAX a model ships, by three methods.

The rules are data, kept here once. They generate the SQL that computes the per-method bitmask
columns when a snapshot is published, and the Python classifier that explains a single model's
result (with evidence). docs/METHODOLOGY.md gives the reason for every rule; the tests check that
the SQL and the Python classifier agree on real records.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from itertools import combinations
from typing import Literal, get_args

# Bumped whenever a rule changes, and recorded in every snapshot, so that figures computed under
# different rules are never silently compared.
CLASSIFIER_VERSION = "2026.11.1"

Framework = Literal["pytorch", "tensorflow", "jax"]
Method = Literal["tags", "files", "inferred"]

FRAMEWORKS: tuple[Framework, ...] = get_args(Framework)
METHODS: tuple[Method, ...] = get_args(Method)

# One bit per framework: a model's frameworks under a method are stored as a small integer, so that
# restricting the comparison to a universe of frameworks is a bitwise AND and grouping is cheap.
BIT: dict[Framework, int] = {"pytorch": 1, "tensorflow": 2, "jax": 4}

# `tags`: the Hub's own weight-format tags, and nothing else (what the 2021-22 analyses counted).
TAG_RULES: dict[Framework, str] = {"pytorch": "pytorch", "tensorflow": "tf", "jax": "jax"}

# `files`: regular expressions on the lower-cased repository path of each file (RE2 and Python
# `re` compatible). safetensors, onnx, gguf and .keras files are deliberately absent: they do not
# say which framework the weights are for.
FILE_RULES: dict[Framework, tuple[str, ...]] = {
    "pytorch": (r"(^|/)pytorch_model[^/]*\.bin$", r"\.pt$", r"\.pth$"),
    "tensorflow": (r"(^|/)tf_model[^/]*\.h5$", r"(^|/)saved_model\.pb(txt)?$", r"\.tflite$"),
    "jax": (r"(^|/)flax_model[^/]*\.msgpack$",),
}

# `inferred` adds what `library_name` implies where the library runs on exactly one framework.
# Compared lower-cased. `transformers` and `keras` (Keras 3 is multi-backend) are deliberately absent.
LIBRARY_RULES: dict[str, Framework] = {
    **{
        name: "pytorch"
        for name in (
            "adapter-transformers",
            "allennlp",
            "asteroid",
            "diffusers",
            "espnet",
            "fairseq",
            "fastai",
            "flair",
            "gliner",
            "nemo",
            "open_clip",
            "peft",
            "pyannote",
            "pyannote-audio",
            "pytorch",
            "sentence-transformers",
            "setfit",
            "speechbrain",
            "stable-baselines3",
            "timm",
            "ultralytics",
            "yolov5",
        )
    },
    "tf-keras": "tensorflow",
    "tensorflowtts": "tensorflow",
}

# A snapshot keeps only the file names that can hold model weights (the "file-derived facts"), not every
# README, tokenizer or TensorBoard event file: 84 % fewer names on the 2022 crawl, and a 2-million-model
# snapshot stays small. Every FILE_RULES pattern only matches names this keeps (tests check it), and the
# neutral formats are kept too, so new rules can be recomputed from old snapshots.
WEIGHT_FILE = re.compile(
    r"\.(bin|pt|pth|h5|hdf5|pb|pbtxt|tflite|msgpack|safetensors|onnx|gguf|ggml|keras|ckpt|pkl|pickle|joblib"
    r"|npz|npy|mlmodel|nemo|ot|model|tar|zip)$"
)


def weight_files(files: Sequence[str] | None) -> list[str] | None:
    """The names in `files` that can hold weights (None stays None: the source did not list files)."""
    if files is None:
        return None
    return [f for f in files if WEIGHT_FILE.search(f.lower())]


_FILE_RES: dict[Framework, tuple[re.Pattern[str], ...]] = {
    fw: tuple(re.compile(p) for p in pats) for fw, pats in FILE_RULES.items()
}


@dataclass(frozen=True)
class Evidence:
    """Why a framework was assigned: the rule kind and the tag, file or library that matched."""

    framework: Framework
    rule: Literal["tag", "file", "library"]
    matched: str


def mask_of(frameworks: Iterable[Framework]) -> int:
    """The bitmask of a set of frameworks."""
    mask = 0
    for fw in frameworks:
        mask |= BIT[fw]
    return mask


def frameworks_of(mask: int) -> list[Framework]:
    """The frameworks in a bitmask, in canonical order."""
    return [fw for fw in FRAMEWORKS if mask & BIT[fw]]


def combination_name(mask: int) -> str:
    """`pytorch+tensorflow` style name of a bitmask, canonical order."""
    return "+".join(frameworks_of(mask))


def shared_combinations(universe: Sequence[Framework]) -> list[int]:
    """Every mask of two or more frameworks within the universe, in a stable order."""
    return [mask_of(c) for size in range(2, len(universe) + 1) for c in combinations(universe, size)]


def evidence(
    tags: Sequence[str] | None, files: Sequence[str] | None, library_name: str | None
) -> dict[Method, list[Evidence]]:
    """Classify one model under every method, with the evidence for each framework assigned."""
    tag_set = set(tags or ())
    by_tags = [Evidence(fw, "tag", tag) for fw, tag in TAG_RULES.items() if tag in tag_set]
    by_files: list[Evidence] = []
    for fw, patterns in _FILE_RES.items():
        hit = next((f for f in files or () if any(p.search(f.lower()) for p in patterns)), None)
        if hit is not None:
            by_files.append(Evidence(fw, "file", hit))
    by_library: list[Evidence] = []
    if library_name and (fw_lib := LIBRARY_RULES.get(library_name.lower())) is not None:
        by_library.append(Evidence(fw_lib, "library", library_name))
    return {"tags": by_tags, "files": by_files, "inferred": by_tags + by_files + by_library}


def classify(tags: Sequence[str] | None, files: Sequence[str] | None, library_name: str | None) -> dict[Method, int]:
    """The bitmask of each method for one model (the Python twin of `mask_sql`)."""
    return {m: mask_of(e.framework for e in ev) for m, ev in evidence(tags, files, library_name).items()}


def sql_literal(value: str) -> str:
    """`value` as a quoted SQL string, for text that cannot be a bound parameter (rule constants in generated
    SQL, file paths in ATTACH). Never for user input: that is always bound."""
    return "'" + value.replace("'", "''") + "'"


def _tag_sql(fw: Framework) -> str:
    return f"coalesce(list_contains(tags, {sql_literal(TAG_RULES[fw])}), false)"


def _file_sql(fw: Framework) -> str:
    pattern = sql_literal("|".join(f"({p})" for p in FILE_RULES[fw]))
    return f"coalesce(len(list_filter(weight_files, lambda f: regexp_matches(lower(f), {pattern}))) > 0, false)"


def _library_sql(fw: Framework) -> str:
    names = [name for name, lib_fw in LIBRARY_RULES.items() if lib_fw == fw]
    if not names:
        return "false"
    return f"coalesce(lower(library_name) IN ({', '.join(sql_literal(n) for n in names)}), false)"


def mask_sql(method: Method) -> str:
    """A SQL expression over columns `tags`, `weight_files`, `library_name` giving the method's bitmask."""
    terms = []
    for fw in FRAMEWORKS:
        parts = {
            "tags": [_tag_sql(fw)],
            "files": [_file_sql(fw)],
            "inferred": [_tag_sql(fw), _file_sql(fw), _library_sql(fw)],
        }[method]
        terms.append(f"(CASE WHEN {' OR '.join(parts)} THEN {BIT[fw]} ELSE 0 END)")
    return "(" + " + ".join(terms) + ")::UTINYINT"
