"""`import translution` needs only torch and numpy: the optional extras load on first use."""
import json
import os
import subprocess
import sys

OPTIONAL = {"matplotlib", "yaml", "tiktoken", "torchvision", "rdata", "pandas", "tqdm"}
MODULES = ("translution", "translution.data", "translution.data.text", "translution.data.austen",
           "translution.data.openwebtext")

CODE = f"""
import json, sys
import torch  # torch itself may load tqdm: only what the imports below add counts
before = set(sys.modules)
import {", ".join(MODULES)}
print(json.dumps(sorted({{m.split(".")[0] for m in set(sys.modules) - before}})))
"""


def test_import_loads_no_optional_dependency():
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    out = subprocess.run([sys.executable, "-c", CODE], capture_output=True, text=True,
                         check=True, env=env).stdout
    loaded = set(json.loads(out.splitlines()[-1]))
    assert "translution" in loaded
    assert not loaded & OPTIONAL, f"importing {MODULES} loaded {sorted(loaded & OPTIONAL)}"
