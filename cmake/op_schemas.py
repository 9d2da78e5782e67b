"""Writes the schemas of the compiled ops (``dopamine_fast/ops/specs.py``, the one place that defines them) as a
C++ list of string literals, for the C++ tests: they define the ops from it, as the package does when it loads."""

import os
import sys

os.environ["DOPAMINE_FAST_NO_NATIVE"] = "1"  # the specs only; a module built earlier must not load
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from dopamine_fast.ops.specs import SPECS  # noqa: E402

text = "".join(f'"{spec.name}{spec.schema}",\n' for spec in SPECS.values())
with open(sys.argv[1], "w") as f:
    f.write(text)
