"""The long fuzz run: at least 100,000 hostile frames (hypothesis, both encodings) through real
sockets against a local stack, then the same checks as tests/load/test_fuzz.py (process alive
and ready, the watching viewer still served, the store unchanged but for accepted commands).

    .venv/bin/python scripts/fuzz.py --frames 100000 [--json out/fuzz.json]

Exit status 1 if any check failed or the server provably handled fewer frames than asked
(``confirmed``: the batches answered up to their closing ping, or ended by the frame that closes).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from loadtests.fuzz_run import STACK_ENV, run_campaign
from loadtests.stack import LocalStack


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=100_000, help="at least this many")
    parser.add_argument("--min-batch", type=int, default=40)
    parser.add_argument("--max-batch", type=int, default=80)
    parser.add_argument("--mutants", type=int, default=4, help="mutants per generated frame")
    parser.add_argument("--json", help="write the report here")
    args = parser.parse_args()
    mean = (args.min_batch + args.max_batch) / 2
    # Frames after the one that ends a batch's connection are dropped: aim higher.
    examples = math.ceil(args.frames / (mean * (1 + args.mutants)) * 2.8)
    with (
        tempfile.TemporaryDirectory(prefix="fuzz-") as tmp,
        LocalStack(Path(tmp), relay=False, env=STACK_ENV) as stack,
    ):
        report = run_campaign(stack, examples=examples, min_batch=args.min_batch,
                              max_batch=args.max_batch, mutants_per_frame=args.mutants,
                              seed_value=None)  # fmt: skip
    report["examples"] = examples
    print(json.dumps(report, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))
    return 1 if report["problems"] or report["confirmed"] < args.frames else 0


if __name__ == "__main__":
    sys.exit(main())
