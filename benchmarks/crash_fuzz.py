"""The crash property of the test suite, run long: many random runs, each crashed at one or two of
its writes, resumed, compared with the uninterrupted run and replayed.

The suite runs 60 examples (``tests/test_crash_property.py``); this runs as many as asked and
prints one JSON object with the outcome and how the examples spread over what they exercised.

    python benchmarks/crash_fuzz.py [--examples 2000] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main(examples: int) -> dict[str, object]:
    env = {**os.environ, "AGENTLEDGER_FUZZ_EXAMPLES": str(examples)}
    started = time.perf_counter()
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "--hypothesis-show-statistics",
            "tests/test_crash_property.py",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    seconds = time.perf_counter() - started
    spread = {
        name: float(share) for share, name in re.findall(r"\*\s+([\d.]+)%, (.+)", done.stdout)
    }
    return {
        "benchmark": "crash_fuzz",
        "examples": examples,
        "passed": done.returncode == 0,
        "seconds": round(seconds, 1),
        "percent_of_examples": spread,
        "failure": None if done.returncode == 0 else done.stdout[-4000:],
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=2000, help="random runs to try")
    parser.add_argument("--json", action="store_true", help="print one JSON object (the default)")
    options = parser.parse_args()
    result = main(options.examples)
    print(json.dumps(result))
    sys.exit(0 if result["passed"] else 1)
