"""Framework classification: which frameworks a model ships (or can be loaded with), by four methods.

The rules are data, kept here once (`RULES`): each names a framework, the methods that use it, the facts
it reads (tags, file names, library, config), a reason, and whether it is a convention rather than a
fact. They generate the SQL that computes the per-method bitmask columns of a snapshot, and the Python
classifier that explains one model with its evidence. docs/METHODOLOGY.md gives every rule with its
reason and its count on the real data; tests/test_frameworks.py checks that SQL and Python agree.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import combinations
from typing import Any, Literal, Protocol, get_args

from hubcensus.queries.sql import sql_literal
from hubcensus.queries.transformers_table import model_types

# Bumped whenever a rule changes, and recorded in every snapshot and answer, so that figures computed under
# different rules are never silently compared (`hubcensus reclassify` brings stored snapshots up to date).
CLASSIFIER_VERSION = "2026.12.1"

Framework = Literal["pytorch", "tensorflow", "jax", "keras", "mlx", "gguf", "onnx"]
Method = Literal["tags", "files", "inferred", "loadable"]

FRAMEWORKS: tuple[Framework, ...] = get_args(Framework)
METHODS: tuple[Method, ...] = get_args(Method)

# One bit per framework: a model's frameworks under a method are stored as a small integer (UTINYINT), so
# that restricting the comparison to a universe of frameworks is a bitwise AND and grouping is cheap.
BIT: dict[Framework, int] = {fw: 1 << i for i, fw in enumerate(FRAMEWORKS)}


def _sql_list(values: Iterable[str]) -> str:
    return "[" + ", ".join(sql_literal(v) for v in sorted(values)) + "]::VARCHAR[]"


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


class Condition(Protocol):
    """A test on a model's facts, as SQL over the snapshot columns and in Python with its evidence."""

    def sql(self, atoms: dict[str, str] | None = None) -> str:
        """A boolean SQL expression (never NULL) over the evidence columns.

        With `atoms` (an atomic test's SQL -> a column name), atomic tests are read from columns computed
        once per row instead of being repeated in every rule that uses them.
        """
        ...

    def atoms(self) -> list[str]:
        """The SQL of every atomic test within."""
        ...

    def match(self, facts: Facts) -> list[str] | None:
        """The evidence (e.g. `file model.safetensors`) when the condition holds, else None."""
        ...


# A row's file names, lower-cased and joined by newlines: computed once per row by classified_sql (as this
# column), and read by every file rule with one regular expression in multi-line mode.
FILES_COLUMN = "_hc_files"
FILES_TEXT = "lower(array_to_string(weight_files, chr(10)))"


class Atom:
    """A test on one fact; its SQL is computed once per row when the classifier runs as SQL."""

    def atom_sql(self) -> str:
        raise NotImplementedError

    def sql(self, atoms: dict[str, str] | None = None) -> str:
        own = self.atom_sql()
        if atoms:
            return atoms.get(own, own)
        # Standalone (mask_sql without classified_sql's prepared columns): the file names joined in place.
        return own.replace(FILES_COLUMN, FILES_TEXT)

    def atoms(self) -> list[str]:
        return [self.atom_sql()]


@dataclass(frozen=True)
class Tag(Atom):
    """Any of these exact (case-sensitive) tags."""

    names: frozenset[str]

    def atom_sql(self) -> str:
        if len(self.names) == 1:
            return f"coalesce(list_contains(tags, {sql_literal(next(iter(self.names)))}), false)"
        # One regular expression over the tags joined by newlines: ten times faster than list_has_any with
        # hundreds of names (the transformers model types), and DuckDB compiles it once.
        alternatives = "|".join(re.escape(n) for n in sorted(self.names))
        return (
            f"coalesce(regexp_matches(array_to_string(tags, chr(10)), {sql_literal(f'(?m)^({alternatives})$')}), false)"
        )

    def match(self, facts: Facts) -> list[str] | None:
        # Split as the SQL's join does, so a (pathological) tag holding a newline is read alike.
        hit = next((line for t in facts.tags or () for line in t.split("\n") if line in self.names), None)
        return None if hit is None else [f"tag {hit}"]


@dataclass(frozen=True)
class UnlistedTag(Atom):
    """Files are not listed (a list response) and the model has any of these tags: the only evidence such a
    record has. Gated in SQL, so the tag test runs only on those rows."""

    names: frozenset[str]

    def atom_sql(self) -> str:
        return f"CASE WHEN weight_files IS NULL THEN {Tag(self.names).atom_sql()} ELSE false END"

    def match(self, facts: Facts) -> list[str] | None:
        return Tag(self.names).match(facts) if facts.files is None else None


@dataclass(frozen=True)
class File(Atom):
    """Any file whose lower-cased path matches the pattern (RE2 and Python `re` compatible)."""

    pattern: str
    _re: re.Pattern[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_re", re.compile(self.pattern))

    def atom_sql(self) -> str:
        # One regular expression over the row's file names, lower-cased and joined by newlines once per row
        # (FILES_COLUMN, see classified_sql), in multi-line mode, rather than a lambda over the list per rule.
        # The patterns never cross a line: `[^/]` is read as `[^/\n]`.
        multiline = "(?m)" + self.pattern.replace("[^/]", r"[^/\n]")
        return f"coalesce(regexp_matches({FILES_COLUMN}, {sql_literal(multiline)}), false)"

    def match(self, facts: Facts) -> list[str] | None:
        hit = next((f for f in facts.files or () if self._re.search(f.lower())), None)
        return None if hit is None else [f"file {hit}"]


@dataclass(frozen=True)
class OnlyFiles(Atom):
    """Files are listed, at least one is a weight file, and every weight file matches the pattern."""

    pattern: str
    _re: re.Pattern[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_re", re.compile(self.pattern))

    def atom_sql(self) -> str:
        weights = f"list_filter(weight_files, lambda f: NOT regexp_matches(lower(f), {sql_literal(NOT_WEIGHTS)}))"
        others = f"list_filter({weights}, lambda f: NOT regexp_matches(lower(f), {sql_literal(self.pattern)}))"
        # Gated on a first match: the full test (two passes over the names) runs only on the few such repos.
        return f"CASE WHEN {File(self.pattern).atom_sql()} THEN coalesce(len({others}) = 0, false) ELSE false END"

    def match(self, facts: Facts) -> list[str] | None:
        weights = [f for f in facts.files or () if not _NOT_WEIGHTS.search(f.lower())]
        if any(self._re.search(f.lower()) for f in weights) and all(self._re.search(f.lower()) for f in weights):
            return [f"only {self.pattern_label} weight files ({len(weights)})"]
        return None

    @property
    def pattern_label(self) -> str:
        return "GGUF/GGML" if "gguf" in self.pattern else self.pattern


@dataclass(frozen=True)
class Library(Atom):
    """`library_name` is one of these (compared lower-cased)."""

    names: frozenset[str]

    def atom_sql(self) -> str:
        return f"coalesce(list_contains({_sql_list(self.names)}, lower(library_name)), false)"

    def match(self, facts: Facts) -> list[str] | None:
        lib = facts.library_name
        return [f"library_name {lib}"] if lib is not None and lib.lower() in self.names else None


@dataclass(frozen=True)
class ModelType(Atom):
    """`config.model_type` is one of these; `None` means any model type at all."""

    names: frozenset[str] | None = None

    def atom_sql(self) -> str:
        if self.names is None:
            return "(model_type IS NOT NULL)"
        # A regular expression, compiled once: ten times faster than list_contains over hundreds of names.
        alternatives = "|".join(re.escape(n) for n in sorted(self.names))
        return f"coalesce(regexp_full_match(model_type, {sql_literal(alternatives)}), false)"

    def match(self, facts: Facts) -> list[str] | None:
        mt = facts.model_type
        if mt is None or (self.names is not None and mt not in self.names):
            return None
        return [f"config.model_type {mt}"]


@dataclass(frozen=True)
class AutoModel(Atom):
    """`transformersInfo` names an auto class: the Hub found a transformers model in the repo."""

    def atom_sql(self) -> str:
        return "(auto_model IS NOT NULL)"

    def match(self, facts: Facts) -> list[str] | None:
        return None if facts.auto_model is None else [f"transformersInfo.auto_model {facts.auto_model}"]


@dataclass(frozen=True)
class FilesUnknown(Atom):
    """The source did not list the repo's files (a list response without `siblings`)."""

    def atom_sql(self) -> str:
        return "(weight_files IS NULL)"

    def match(self, facts: Facts) -> list[str] | None:
        return ["files not listed"] if facts.files is None else None


@dataclass(frozen=True)
class AnyOf:
    """Any of the conditions; the evidence of the first that holds."""

    parts: tuple[Condition, ...]

    def sql(self, atoms: dict[str, str] | None = None) -> str:
        return "(" + " OR ".join(p.sql(atoms) for p in self.parts) + ")"

    def atoms(self) -> list[str]:
        return [a for p in self.parts for a in p.atoms()]

    def match(self, facts: Facts) -> list[str] | None:
        return next((m for p in self.parts if (m := p.match(facts)) is not None), None)


@dataclass(frozen=True)
class AllOf:
    """All of the conditions; the evidence of each."""

    parts: tuple[Condition, ...]

    def sql(self, atoms: dict[str, str] | None = None) -> str:
        return "(" + " AND ".join(p.sql(atoms) for p in self.parts) + ")"

    def atoms(self) -> list[str]:
        return [a for p in self.parts for a in p.atoms()]

    def match(self, facts: Facts) -> list[str] | None:
        found: list[str] = []
        for part in self.parts:
            m = part.match(facts)
            if m is None:
                return None
            found += m
        return found


@dataclass(frozen=True)
class Not:
    """The condition does not hold."""

    part: Condition

    def sql(self, atoms: dict[str, str] | None = None) -> str:
        return f"(NOT {self.part.sql(atoms)})"

    def atoms(self) -> list[str]:
        return self.part.atoms()

    def match(self, facts: Facts) -> list[str] | None:
        return [] if self.part.match(facts) is None else None


def tag(*names: str) -> Tag:
    """Any of these tags."""
    return Tag(frozenset(names))


def library(*names: str) -> Library:
    """library_name is one of these."""
    return Library(frozenset(names))


def any_of(*parts: Condition) -> AnyOf:
    """Any of the conditions."""
    return AnyOf(parts)


def all_of(*parts: Condition) -> AllOf:
    """All of the conditions."""
    return AllOf(parts)


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
_NOT_WEIGHTS = re.compile(NOT_WEIGHTS)


def weight_files(files: Sequence[str] | None) -> list[str] | None:
    """The names in `files` that can hold weights (None stays None: the source did not list files)."""
    if files is None:
        return None
    return [f for f in files if WEIGHT_FILE.search(f.lower())]


def holds_weights(files: Sequence[str] | None) -> bool:
    """Whether any listed file holds model weights (not a tokenizer, optimizer state or Trainer arguments)."""
    return any(not _NOT_WEIGHTS.search(f.lower()) for f in weight_files(files) or ())


# ------------------------------------------------------------------------------------------------------
# The rules.
# ------------------------------------------------------------------------------------------------------

# File name patterns, lower-cased paths.
PYTORCH_MODEL_BIN = r"(^|/)pytorch_model[^/]*\.bin$"
TORCH_SAVE = r"\.pth?$"
DIFFUSERS_PYTORCH = r"(^|/)(diffusion_pytorch_model|pytorch_lora_weights)[^/]*\.(bin|safetensors)$"
TF_MODEL_H5 = r"(^|/)tf_model[^/]*\.h5$"
SAVED_MODEL = r"(^|/)saved_model\.pb(txt)?$"
TFLITE = r"\.tflite$"
FLAX_MODEL = r"(^|/)(flax|diffusion_flax)_model[^/]*\.msgpack$"
KERAS_FILE = r"\.keras$"
GGUF_FILE = r"\.gguf$|\.gguf\.part\d+of\d+$|(^|/|[._-])ggml[^/]*\.bin$|\.ggml$"
ONNX_FILE = r"\.onnx$|\.onnx_data$|\.onnx\.data$|\.ort$"
TRAINING_ARGS = r"(^|/)training_args\.bin$"
PEFT_ADAPTER = r"(^|/)adapter_model\.(safetensors|bin)$"
TEXTUAL_INVERSION = r"(^|/)learned_embeds[^/]*\.(bin|safetensors)$"
CKPT = r"\.ckpt$"
# What `save_pretrained` writes (sharded or not), and Mistral's `consolidated` files (mistral-inference).
PRETRAINED_SAFETENSORS = r"(^|/)(model|consolidated)(-\d+-of-\d+|\.\d+)?\.safetensors$"
# A Keras 2 (TensorFlow) repo: a SavedModel or HDF5 weights, which Keras 3 does not write.
KERAS2_FILE = r"(^|/)saved_model\.pb$|\.h5$"

PYTORCH_LIBRARIES = frozenset(
    {
        "adapter-transformers", "allennlp", "asteroid", "diffusers", "espnet", "fairseq", "fastai", "flair",
        "gliner", "nemo", "open_clip", "peft", "pyannote", "pyannote-audio", "pytorch", "sentence-transformers",
        "setfit", "speechbrain", "stable-baselines3", "timm", "ultralytics", "yolov5",
    }
)  # fmt: skip
TENSORFLOW_LIBRARIES = frozenset({"tf-keras", "tensorflowtts"})

# An MLX conversion (mlx-lm, mlx-my-repo, mlx-community): its safetensors are in MLX's layout, and its card
# copies the base model's tags (often `pytorch`). A GGUF conversion holds only GGUF files (or, unlisted, is
# tagged gguf and not safetensors): its card, tags and library name are the base model's, not its files'.
MLX_REPO = any_of(library("mlx"), tag("mlx"))
GGUF_ONLY = any_of(OnlyFiles(GGUF_FILE), all_of(UnlistedTag(frozenset({"gguf"})), Not(tag("safetensors"))))
CONVERSION = any_of(MLX_REPO, GGUF_ONLY)

# A transformers repo: the Hub's library or tag says so, or its config has a model type, or the Hub found an
# auto class. (For repos created after August 2024 a config.json no longer implies `transformers` on the Hub,
# so a missing library_name does not mean "not transformers".)
TRANSFORMERS_TYPES = frozenset(model_types("pytorch"))
TRANSFORMERS_REPO = any_of(
    library("transformers"), tag("transformers"), ModelType(), AutoModel(), UnlistedTag(TRANSFORMERS_TYPES)
)
# Weights transformers 4.x loads: its own checkpoint names, or (unlisted files) the format tags.
TRANSFORMERS_WEIGHTS = any_of(
    File(PYTORCH_MODEL_BIN),
    File(TF_MODEL_H5),
    File(FLAX_MODEL),
    File(PRETRAINED_SAFETENSORS),
    UnlistedTag(frozenset({"safetensors", "pytorch", "tf", "jax"})),
)


@dataclass(frozen=True)
class Rule:
    """One way of knowing that a model ships (or loads with) a framework.

    `when` must hold and `unless` must not. `convention` marks evidence that is a convention (how tools
    usually write files) rather than a fact about the files.
    """

    id: str
    framework: Framework
    methods: frozenset[Method]
    when: Condition
    reason: str
    unless: Condition | None = None
    convention: bool = False

    def sql(self, atoms: dict[str, str] | None = None) -> str:
        """The rule as a boolean SQL expression."""
        if self.unless is None:
            return self.when.sql(atoms)
        return f"({self.when.sql(atoms)} AND NOT {self.unless.sql(atoms)})"

    def atoms(self) -> list[str]:
        """The SQL of every atomic test the rule reads."""
        return self.when.atoms() + (self.unless.atoms() if self.unless is not None else [])

    def match(self, facts: Facts) -> list[str] | None:
        """The evidence when the rule fires, else None."""
        found = self.when.match(facts)
        if found is None or (self.unless is not None and self.unless.match(facts) is not None):
            return None
        return found


TAGS: frozenset[Method] = frozenset({"tags"})
FILES: frozenset[Method] = frozenset({"files", "inferred", "loadable"})
INFERRED: frozenset[Method] = frozenset({"inferred", "loadable"})
LOADABLE: frozenset[Method] = frozenset({"loadable"})


def _loadable(framework: Framework) -> Rule:
    return Rule(
        f"transformers4.{framework}",
        framework,
        LOADABLE,
        all_of(
            TRANSFORMERS_REPO,
            TRANSFORMERS_WEIGHTS,
            any_of(ModelType(model_types(framework)), UnlistedTag(model_types(framework))),
        ),
        f"transformers 4.x has a {framework} implementation of the repo's model_type (its own auto mappings,"
        " queries/data/transformers_frameworks.json), and loads the repo's weights into it, converting between"
        " frameworks if need be. transformers 5 loads PyTorch only.",
        unless=CONVERSION,
    )


RULES: tuple[Rule, ...] = (
    # --- tags: the Hub's weight tags and nothing else (the method of the 2021-22 analyses; keep as is) ---------
    Rule("tag.pytorch", "pytorch", TAGS, tag("pytorch"), "The Hub's tag for PyTorch weights."),
    Rule("tag.tf", "tensorflow", TAGS, tag("tf"), "The Hub's tag for TensorFlow weights (not `tensorflow`)."),
    Rule("tag.jax", "jax", TAGS, tag("jax"), "The Hub's tag for Flax/JAX weights."),
    # --- files: names that say which framework wrote them -----------------------------------------------------
    Rule(
        "file.pytorch_model", "pytorch", FILES, File(PYTORCH_MODEL_BIN), "transformers' PyTorch weights (sharded too)."
    ),
    Rule("file.torch_save", "pytorch", FILES, File(TORCH_SAVE), "`torch.save` files (.pt, .pth)."),
    Rule(
        "file.diffusers_pytorch",
        "pytorch",
        FILES,
        File(DIFFUSERS_PYTORCH),
        "diffusers names its PyTorch weights `diffusion_pytorch_model` and `pytorch_lora_weights`.",
    ),
    Rule("file.tf_model", "tensorflow", FILES, File(TF_MODEL_H5), "transformers' TensorFlow weights (sharded too)."),
    Rule("file.saved_model", "tensorflow", FILES, File(SAVED_MODEL), "A TensorFlow SavedModel."),
    Rule("file.tflite", "tensorflow", FILES, File(TFLITE), "TensorFlow Lite."),
    Rule("file.flax_model", "jax", FILES, File(FLAX_MODEL), "transformers' and diffusers' Flax weights."),
    Rule("file.keras", "keras", FILES, File(KERAS_FILE), "The `.keras` format, which Keras 3 loads on any backend."),
    Rule("file.gguf", "gguf", FILES, File(GGUF_FILE), "GGUF (and its predecessor GGML) files of llama.cpp."),
    Rule("file.onnx", "onnx", FILES, File(ONNX_FILE), "ONNX models and their external data."),
    # --- inferred: tags, libraries and how today's tools write files -----------------------------------------
    Rule(
        "weight_tag.pytorch",
        "pytorch",
        INFERRED,
        tag("pytorch"),
        "As `tags`, except in MLX and GGUF conversions, whose cards copy the base model's tags.",
        unless=CONVERSION,
    ),
    Rule("weight_tag.tf", "tensorflow", INFERRED, tag("tf"), "As `tags`, except in conversions.", unless=CONVERSION),
    Rule("weight_tag.jax", "jax", INFERRED, tag("jax"), "As `tags`, except in conversions.", unless=CONVERSION),
    Rule("format_tag.gguf", "gguf", INFERRED, tag("gguf"), "The Hub tags repos that hold GGUF files `gguf`."),
    Rule("format_tag.onnx", "onnx", INFERRED, tag("onnx"), "The Hub tags repos that hold ONNX files `onnx`."),
    Rule("mlx", "mlx", INFERRED, MLX_REPO, "MLX conversions carry library_name `mlx` or the tag `mlx`."),
    Rule(
        "keras",
        "keras",
        INFERRED,
        any_of(library("keras"), tag("keras")),
        "A Keras repo (Keras 3 runs on TensorFlow, JAX or PyTorch: its own framework here), unless it holds a"
        " SavedModel or HDF5 weights, which are Keras 2's, i.e. TensorFlow's.",
        unless=File(KERAS2_FILE),
    ),
    Rule(
        "keras2.tensorflow",
        "tensorflow",
        INFERRED,
        all_of(any_of(library("keras"), tag("keras")), File(KERAS2_FILE)),
        "A Keras repo with a SavedModel or HDF5 weights: Keras 2, which is part of TensorFlow.",
    ),
    Rule(
        "library.pytorch",
        "pytorch",
        INFERRED,
        Library(PYTORCH_LIBRARIES),
        "A library that runs on PyTorch only.",
        unless=CONVERSION,
    ),
    Rule("library.tensorflow", "tensorflow", INFERRED, Library(TENSORFLOW_LIBRARIES), "A TensorFlow-only library."),
    Rule("library.gguf", "gguf", INFERRED, library("gguf", "llama.cpp"), "The Hub's library for GGUF repos."),
    Rule(
        "library.onnx",
        "onnx",
        INFERRED,
        library("onnx", "transformers.js"),
        "ONNX, and transformers.js, which runs ONNX weights.",
    ),
    Rule(
        "trainer.pytorch",
        "pytorch",
        INFERRED,
        File(TRAINING_ARGS),
        "transformers' Trainer, which runs on PyTorch only, saves `training_args.bin` with `torch.save`.",
    ),
    Rule("peft.pytorch", "pytorch", INFERRED, File(PEFT_ADAPTER), "PEFT adapters; PEFT runs on PyTorch only."),
    Rule(
        "textual_inversion.pytorch",
        "pytorch",
        INFERRED,
        File(TEXTUAL_INVERSION),
        "Textual-inversion embeddings written by diffusers' (PyTorch) training scripts.",
    ),
    Rule(
        "ckpt.pytorch",
        "pytorch",
        INFERRED,
        File(CKPT),
        "`.ckpt` files are PyTorch Lightning and Stable Diffusion checkpoints (torch pickles); TensorFlow's"
        " checkpoints are `.index`/`.data-*` files.",
        unless=CONVERSION,
        convention=True,
    ),
    Rule(
        "save_pretrained.pytorch",
        "pytorch",
        INFERRED,
        all_of(File(PRETRAINED_SAFETENSORS), any_of(TRANSFORMERS_REPO, library("diffusers", "vllm"))),
        "`model.safetensors` (or shards) in a transformers repo: `save_pretrained` writes safetensors from"
        " PyTorch by default since transformers 4.35; TensorFlow writes `tf_model.h5`, Flax"
        " `flax_model.msgpack`. Not in MLX or GGUF conversions.",
        unless=CONVERSION,
        convention=True,
    ),
    Rule(
        "safetensors_tag.pytorch",
        "pytorch",
        INFERRED,
        all_of(UnlistedTag(frozenset({"safetensors"})), TRANSFORMERS_REPO),
        "Files not listed (a list response): the Hub's `safetensors` tag on a transformers repo, by the same"
        " convention as `save_pretrained.pytorch`.",
        unless=CONVERSION,
        convention=True,
    ),
    # --- loadable: what transformers 4.x can load the weights with -----------------------------------------
    _loadable("pytorch"),
    _loadable("tensorflow"),
    _loadable("jax"),
)


# ------------------------------------------------------------------------------------------------------
# Classification in Python (one model, with evidence) and in SQL (a whole snapshot).
# ------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Evidence:
    """Why a framework was assigned: the rule, and the tags, files, library or config fields it read."""

    framework: Framework
    rule: str
    matched: list[str]
    reason: str
    convention: bool


def explain(facts: Facts) -> dict[Method, list[Evidence]]:
    """Classify one model under every method, with the evidence for each framework assigned."""
    out: dict[Method, list[Evidence]] = {m: [] for m in METHODS}
    for rule in RULES:
        found = rule.match(facts)
        if found is None:
            continue
        for method in METHODS:
            if method in rule.methods:
                out[method].append(Evidence(rule.framework, rule.id, found, rule.reason, rule.convention))
    return out


def classify(facts: Facts) -> dict[Method, int]:
    """The bitmask of each method for one model (the Python twin of `mask_sql`)."""
    return {m: mask_of(e.framework for e in ev) for m, ev in explain(facts).items()}


def atom_columns() -> dict[str, str]:
    """Every atomic test SQL evaluates (its SQL), each with the name of a column to compute it in once."""
    seen = dict.fromkeys(a for rule in RULES for a in rule.atoms())
    return {sql: f"_c{i}" for i, sql in enumerate(seen)}


def mask_sql(method: Method, atoms: dict[str, str] | None = None) -> str:
    """A SQL expression giving the method's bitmask (UTINYINT): over the evidence columns, or over the
    atomic tests' columns (`atom_columns`) when `atoms` is given."""
    terms = []
    for fw in FRAMEWORKS:
        parts = [r.sql(atoms) for r in RULES if r.framework == fw and method in r.methods]
        if parts:
            terms.append(f"(CASE WHEN {' OR '.join(parts)} THEN {BIT[fw]} ELSE 0 END)")
    return "(" + " + ".join(terms) + ")::UTINYINT"


# The columns a snapshot keeps for the rules, in table order after the model's own metadata.
FACT_COLUMNS = ("tags", "library_name", "weight_files", "model_type", "architectures", "auto_model")


def classified_sql(source: str) -> str:
    """`SELECT *, fw_<method> …` over `source` (a query or table with the fact columns): every method's
    bitmask, with each atomic test computed once per row rather than once per rule that reads it."""
    atoms = atom_columns()
    tests = ",\n    ".join(f"{sql} AS {name}" for sql, name in atoms.items())
    masks = ",\n    ".join(f"{mask_sql(m, atoms)} AS fw_{m}" for m in METHODS)
    return (
        f"SELECT * EXCLUDE ({FILES_COLUMN}, {', '.join(atoms.values())}),\n    {masks}\n"
        f"FROM (SELECT *,\n    {tests}\nFROM (SELECT *, {FILES_TEXT} AS {FILES_COLUMN} FROM ({source})))"
    )


def rules_for(method: Method) -> list[Rule]:
    """The rules a method uses, in table order."""
    return [r for r in RULES if method in r.methods]


# ------------------------------------------------------------------------------------------------------
# Bitmask helpers.
# ------------------------------------------------------------------------------------------------------


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
