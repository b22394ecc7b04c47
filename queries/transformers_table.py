"""Which frameworks transformers 4.x implements for each `model_type`: the table the `loadable` method reads.

transformers deprecated TensorFlow and Flax in June 2025 and removed them in v5: the last 4.x release is the
last word on which model types had a TensorFlow or Flax implementation. The table is generated once from
transformers' own auto mappings (`MODEL_*_MAPPING_NAMES`, `TF_MODEL_*_MAPPING_NAMES`,
`FLAX_MODEL_*_MAPPING_NAMES`, the source of the Hub's `huggingface/transformers-metadata` frameworks.json)
and bundled as `queries/data/transformers_frameworks.json`, with the version it came from. Regenerate with

    pip install 'transformers<5'   # in a scratch venv: not a dependency of hubcensus
    python -m hubcensus.queries.transformers_table
"""

from __future__ import annotations

import importlib
import json
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

TABLE_NAME = "transformers_frameworks.json"

# Auto-mapping modules of transformers 4.x, and the prefix of their mapping names, per framework.
_MAPPINGS = {
    "pytorch": ("modeling_auto", "MODEL_"),
    "tensorflow": ("modeling_tf_auto", "TF_MODEL_"),
    "jax": ("modeling_flax_auto", "FLAX_MODEL_"),
}


@cache
def transformers_table() -> dict[str, Any]:
    """The bundled table: `{"transformers_version", "model_types": {model_type: [frameworks]}}`."""
    text = resources.files("hubcensus.queries").joinpath("data", TABLE_NAME).read_text()
    table: dict[str, Any] = json.loads(text)
    return table


def model_types(framework: str) -> frozenset[str]:
    """The model types with an implementation in `framework` (pytorch, tensorflow or jax) in transformers 4.x."""
    return frozenset(mt for mt, fws in transformers_table()["model_types"].items() if framework in fws)


def generate() -> dict[str, Any]:
    """Build the table from the installed transformers (4.x), reading its auto mappings."""
    transformers = importlib.import_module("transformers")
    version: str = transformers.__version__
    if not version.startswith("4."):
        raise SystemExit(f"transformers {version} is installed; the table needs a 4.x release (TF/Flax removed in 5)")
    frameworks: dict[str, set[str]] = {}
    for framework, (module_name, prefix) in _MAPPINGS.items():
        module = importlib.import_module(f"transformers.models.auto.{module_name}")
        # Only the mappings this module defines (it also imports CONFIG_MAPPING_NAMES, which lists every type).
        for name in dir(module):
            if name.startswith(prefix) and name.endswith("MAPPING_NAMES"):
                for model_type in getattr(module, name):
                    frameworks.setdefault(model_type, set()).add(framework)
    order = list(_MAPPINGS)
    return {
        "transformers_version": version,
        "source": "transformers.models.auto.modeling{,_tf,_flax}_auto *_MAPPING_NAMES",
        "model_types": {mt: sorted(fws, key=order.index) for mt, fws in sorted(frameworks.items())},
    }


if __name__ == "__main__":
    out = Path(__file__).parent / "data" / TABLE_NAME
    out.write_text(json.dumps(generate(), indent=1) + "\n")
    print(f"wrote {out}")
