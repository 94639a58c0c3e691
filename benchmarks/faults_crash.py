"""Process crashes: two workers drive one set of runs on one SQLite file and are killed with
SIGKILL at random moments and started again, while side effects, retries and fallbacks go on.

Prints one JSON object: runs and their statuses, deliveries and duplicate deliveries (0),
acknowledged events lost (0), version gaps (0), runs whose replay differs from their log (0),
runs that were resumed after a kill, kills, seconds.

    python benchmarks/faults_crash.py [--runs 200] [--kills 60] [--seed 1] [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from crash_pair import crash_pair

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--kills", type=int, default=60)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", action="store_true", help="print one JSON object (the default)")
    options = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        report = crash_pair(Path(tmp), runs=options.runs, kills=options.kills, seed=options.seed)
    print(json.dumps({"benchmark": "faults_crash", **report}))
