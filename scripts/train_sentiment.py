"""Retrain the `sentiment` scorer's logistic regression and write its weights file.

    HF_HUB_OFFLINE=1 python scripts/train_sentiment.py [--seed 0] [--n-train 20000]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from harness.scorers.sentiment_training import WEIGHTS_PATH, train  # noqa: E402


def main() -> None:
    """Train, print the held-out metrics and the time taken, write the JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--n-train", type=int, default=20_000)
    parser.add_argument("--out", type=Path, default=WEIGHTS_PATH)
    args = parser.parse_args()
    start = time.perf_counter()
    weights = train(seed=args.seed, n_train=args.n_train)
    elapsed = time.perf_counter() - start
    args.out.write_text(json.dumps(weights, indent=1) + "\n")
    w = weights
    print(f"trained on {w['n_train']} tweets in {elapsed:.0f} s; held-out ({w['n_heldout']}): "
          f"AUC {w['heldout_auc']:.4f}, accuracy {w['heldout_accuracy']:.4f}, "
          f"VADER AUC {w['heldout_auc_vader']:.4f}")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
