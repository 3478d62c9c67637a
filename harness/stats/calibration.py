"""Are the intervals and tests what they claim? The coverage of every CI a run prints and the
false-positive rate of every test, measured by simulation on null normal data at every size the
tool accepts (`python -m harness.stats.calibration` prints the table the README carries).

Printed intervals: the paired Student t interval (effects, fluency, controls, `check`) and Welch's
interval (`compare` of runs with different prompts); the BCa bootstrap interval the harness used
before is measured too, to show why it was replaced. Tests: the two-sided sign-flip test of every
effect, the one-sided sign-flip margin tests of `check`, and Welch's t-test.

The sign-flip p-values are computed here for all simulated runs at once, exactly as
`harness.stats.paired_p_value` does (all 2**n flips up to 13 prompts, 9999 random ones above); a
test checks the two agree.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np

from harness.schema.spec import ALPHA
from harness.stats import PERMUTATIONS, Alternative, bootstrap_ci, smallest_p, t_ci, welch

SIZES = (2, 3, 4, 6, 8, 12, 24, 48)


@dataclass(frozen=True)
class Row:
    """One size: the share of simulated runs whose 95 % interval covers the true difference (0),
    and the share whose test rejects at ALPHA although nothing differs."""

    n: int  # prompts (per side for the independent comparison)
    t_coverage: float
    welch_coverage: float
    bca_coverage: float | None  # the replaced paired BCa interval (None: not simulated)
    sign_flip_fpr: float  # two-sided
    margin_less_fpr: float  # one-sided, as `check` uses them
    margin_greater_fpr: float
    welch_fpr: float
    smallest_p: float  # the smallest two-sided sign-flip p-value at this n


def sign_flip_p_values(x: np.ndarray, alternative: Alternative = "two-sided", seed: int = 0) -> np.ndarray:
    """`harness.stats.paired_p_value` of every row of `x` at once: exact over all 2**n sign flips
    when 2**n <= PERMUTATIONS (the observed sign pattern included), else PERMUTATIONS random flips
    shared by the rows, counted with the +1 correction of a Monte Carlo p-value."""
    n = x.shape[1]
    exact = 2**n <= PERMUTATIONS
    if exact:
        signs = np.array(list(itertools.product((1.0, -1.0), repeat=n)))
    else:
        signs = np.random.default_rng(seed).choice((1.0, -1.0), size=(PERMUTATIONS, n))
    null = x @ signs.T / n  # [rows, flips]
    observed = x.mean(axis=1, keepdims=True)
    gamma = np.abs(observed) * np.finfo(float).eps * 100  # scipy's tolerance for equal statistics
    extra = 0 if exact else 1

    def share(hits: np.ndarray) -> np.ndarray:
        return (hits.sum(axis=1) + extra) / (signs.shape[0] + extra)

    less, greater = share(null <= observed + gamma), share(null >= observed - gamma)
    if alternative == "less":
        return less
    if alternative == "greater":
        return greater
    return np.minimum(1.0, 2 * np.minimum(less, greater))


def _covers(intervals: list[tuple[float, float]]) -> float:
    return float(np.mean([low <= 0.0 <= high for low, high in intervals]))


def _rejections(d: np.ndarray, alternative: Alternative, seed: int) -> float:
    """Share of the rows of `d` whose sign-flip test rejects at ALPHA (in chunks of 1000 rows)."""
    chunks = [sign_flip_p_values(d[i:i + 1000], alternative, seed) for i in range(0, d.shape[0], 1000)]
    return float(np.mean(np.concatenate(chunks) < ALPHA))


def calibrate(n: int, reps: int = 1000, seed: int = 0, bca: bool = False, sign_flip_reps: int = 20) -> Row:
    """Simulate `reps` null runs of `n` prompts (per-prompt differences N(0, 1); for the
    independent comparison two samples of n prompts each) and measure every interval and test;
    the sign-flip tests, computed at once for many runs, on `sign_flip_reps` times as many."""
    rng = np.random.default_rng([seed, n])
    d = rng.normal(0.0, 1.0, (reps, n))
    many = rng.normal(0.0, 1.0, (reps * sign_flip_reps, n))
    a, b = rng.normal(0.0, 1.0, (reps, n)), rng.normal(0.0, 2.0, (reps, n))  # unequal spreads
    welch_runs = [welch(x, y) for x, y in zip(a, b, strict=True)]
    return Row(
        n=n,
        t_coverage=_covers([t_ci(row) for row in d]),
        welch_coverage=_covers([(low, high) for low, high, _ in welch_runs]),
        bca_coverage=_covers([bootstrap_ci(row, seed=i) for i, row in enumerate(d)]) if bca else None,
        sign_flip_fpr=_rejections(many, "two-sided", seed),
        margin_less_fpr=_rejections(many, "less", seed),
        margin_greater_fpr=_rejections(many, "greater", seed),
        welch_fpr=float(np.mean([p < ALPHA for _, _, p in welch_runs])),
        smallest_p=smallest_p(n),
    )


def table(rows: list[Row], reps: int, sign_flip_reps: int = 20) -> str:
    """The rows as a Markdown table."""
    out = [f"Null normal data, {reps} simulated runs per size ({reps * sign_flip_reps} for the sign-flip "
           f"tests), 95 % intervals, tests at α = {ALPHA}.", "",
           "| prompts | paired t CI coverage | Welch CI coverage | BCa coverage (replaced) | sign-flip FPR "
           "(two-sided) | margin test FPR (less / greater) | Welch test FPR | smallest sign-flip p |",
           "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        bca = "—" if r.bca_coverage is None else f"{r.bca_coverage:.3f}"
        out.append(f"| {r.n} | {r.t_coverage:.3f} | {r.welch_coverage:.3f} | {bca} | {r.sign_flip_fpr:.3f} | "
                   f"{r.margin_less_fpr:.3f} / {r.margin_greater_fpr:.3f} | {r.welch_fpr:.3f} | "
                   f"{r.smallest_p:.3g} |")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> None:
    """`python -m harness.stats.calibration [--reps N]`: print the table (--help says what it is)."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m harness.stats.calibration",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=1000, help="simulated runs per size (default 1000)")
    reps = parser.parse_args(argv).reps
    rows = [calibrate(n, reps, bca=True) for n in SIZES]
    print(table(rows, reps))


if __name__ == "__main__":
    main()
