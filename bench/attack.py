"""The long attack run: `python bench/attack.py --examples 200` (schemathesis over the whole OpenAPI as
every role; prints each operation that gave a 5xx, and how often). See tests/security/attack.py."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.security.attack import run_attack


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--examples", type=int, default=200, help="generated requests per operation and role")
    args = ap.parse_args()
    t0 = time.perf_counter()
    found = run_attack(args.examples)
    for (who, method, path), problems in sorted(found.items()):
        print(f"{who:>9} {method:6} {path}: {len(problems)} x {problems[0]}")
    print(f"{len(found)} operation/role pairs with 5xx or crashes; {time.perf_counter() - t0:.0f} s")
    return 1 if found else 0


if __name__ == "__main__":
    raise SystemExit(main())
