"""How long importing what a ``cat`` training needs takes, and whether TensorFlow is among
it: imports kennel's training modules, then runs a tiny cat training in this process and
reports every heavy module loaded. Prints one JSON line."""

from __future__ import annotations

import json
import sys
import time

started = time.perf_counter()
import mlflow  # noqa: E402, F401

import kennel.data  # noqa: E402, F401
import kennel.families.cat.model  # noqa: E402, F401
import kennel.families.cat.trainer  # noqa: E402, F401
import kennel.registry  # noqa: E402, F401
import kennel.serve.pyfunc  # noqa: E402, F401
import kennel.tracking  # noqa: E402, F401
import kennel.train  # noqa: E402, F401

import_s = time.perf_counter() - started
after_import = sorted(m for m in sys.modules if m.split(".")[0] in {"tensorflow", "keras", "torch"})

from kennel.cli import main  # noqa: E402

code = main(["train", "-c", "configs/cat.yaml", "--output-dir", sys.argv[1]])
heavy = sorted({m.split(".")[0] for m in sys.modules} & {"tensorflow", "keras", "torch"})
print(
    json.dumps(
        {
            "import_s": round(import_s, 3),
            "heavy_after_import": after_import,
            "heavy_after_training": heavy,
            "exit_code": code,
        }
    )
)
