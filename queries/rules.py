"""The classifier's rules, as data: each names a framework, the methods that use it, the condition it tests
(queries/conditions.py), a reason, and whether it is a convention rather than a fact. docs/METHODOLOGY.md gives
every rule with its reason and its count on the real data.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

from hubcensus.queries.conditions import (
    AutoModel,
    Condition,
    File,
    Library,
    ModelType,
    Not,
    OnlyFiles,
    UnlistedTag,
    all_of,
    any_of,
    library,
    tag,
)
from hubcensus.queries.facts import Facts
from hubcensus.queries.transformers_table import model_types

# Bumped whenever a rule changes, and recorded in every snapshot and answer, so that figures computed under
# different rules are never silently compared (`hubcensus reclassify` brings stored snapshots up to date).
CLASSIFIER_VERSION = "2026.12.1"

Framework = Literal["pytorch", "tensorflow", "jax", "keras", "mlx", "gguf", "onnx"]
Method = Literal["tags", "files", "inferred", "loadable"]

FRAMEWORKS: tuple[Framework, ...] = get_args(Framework)
METHODS: tuple[Method, ...] = get_args(Method)


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


def rules_for(method: Method) -> list[Rule]:
    """The rules a method uses, in table order."""
    return [r for r in RULES if method in r.methods]
