"""``python -m serve.cache calibrate --encoder static|minilm --target-false-hit 0.01 --out FILE.json``.

Calibrates the cache's similarity threshold on labelled question pairs (``$ROUTING_DATA_DIR/
gptcache_paraphrase`` or ``--pairs FILE``) and writes a threshold file that
``SemanticCache(threshold_file=FILE.json)`` accepts for the same encoder.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from router.errors import RoutingError


def main(argv: list[str] | None = None) -> int:
    from serve.cache.calibrate import ENCODERS

    ap = argparse.ArgumentParser(prog="python -m serve.cache", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="command", required=True)
    cal = sub.add_parser("calibrate", help="pick the similarity threshold for a target false-hit rate")
    cal.add_argument("--encoder", choices=sorted(ENCODERS), default="static")
    cal.add_argument("--target-false-hit", type=float, default=0.01,
                     help="share of different-question pairs allowed to hit (default 0.01)")
    cal.add_argument("--out", required=True, help="threshold file to write (JSON)")
    cal.add_argument("--pairs", default=None, help="JSONL/CSV of text_a, text_b, label instead of the GPTCache data")
    cal.add_argument("--calibration-share", type=float, default=0.5)
    cal.add_argument("--seed", type=int, default=0)
    cal.add_argument("--max-pairs", type=int, default=None, help="stratified subsample of the pairs")
    cal.add_argument("--retrieval-pairs", type=int, default=10_000, help="held-out pairs for the retrieval measure")
    cal.add_argument("--embedding-cache", default=None,
                     help="directory keeping text vectors between runs (default: none)")
    args = ap.parse_args(argv)

    from serve.cache.calibrate import calibrate

    try:
        doc = calibrate(
            args.encoder, target_false_hit=args.target_false_hit, calibration_share=args.calibration_share,
            seed=args.seed, max_pairs=args.max_pairs, retrieval_pairs=args.retrieval_pairs,
            pairs_path=args.pairs, cache_dir=args.embedding_cache,
        )
    except RoutingError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    doc["command"] = "python -m serve.cache " + " ".join(argv if argv is not None else sys.argv[1:])
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=1) + "\n")
    held = doc["held_out"]
    print(f"{args.encoder}: threshold {doc['threshold']:.4f} (target false-hit {args.target_false_hit:g}); held-out "
          f"false-hit {held['false_hit']['rate']:.4f}, hit {held['hit']['rate']:.4f} -> {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
