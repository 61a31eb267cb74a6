"""make bench: every benchmark in turn, each with its defaults, each in a fresh process.

A process of its own per benchmark, so none inherits another's TensorFlow
state (bench.transfer turns on op determinism, which changes how tf.data runs
the pipelines that bench.training times) or its memory.
"""

import subprocess
import sys

BENCHMARKS = ["bench.ingestion", "bench.training", "bench.transfer", "bench.rerun"]

failed = []
for module in BENCHMARKS:
    print(f"== python -m {module}", flush=True)
    if subprocess.run([sys.executable, "-m", module]).returncode:
        failed.append(module)
    print(flush=True)
if failed:
    sys.exit(f"failed: {', '.join(failed)}")
