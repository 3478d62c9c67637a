"""run.json and samples.jsonl: the schema other tools and `harness check` read."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field

from harness.schema.spec import FLUENCY_METRIC
from harness.schema.spec import Record as _Record
from harness.schema.task import Direction

SCHEMA_VERSION = 3  # 3: every comparison nests an Estimate


class Estimate(_Record):
    """One comparison of per-prompt values, b − a, every number from the same values
    (`harness.stats.comparison.compare_values`): the means, the difference with its CI, the two-sided
    p-value, which interval and test gave them, how many prompts counted, the spread, the minimum
    detectable effect and Hedges' g. Paired when both sides hold the same prompts."""

    paired: bool
    mean_a: float  # mean over the compared prompts of the reference side (unsteered, a baseline)
    mean_b: float
    point: float  # mean_b − mean_a (paired: the mean of the per-prompt differences)
    ci_low: float
    ci_high: float
    confidence: float = 0.95
    ci_method: str  # "Student t", "Welch t", or "none: ..." (then the bounds are NaN)
    p_value: float  # two-sided
    test: str  # "sign-flip permutation", "Welch t-test", or "none: ..."
    n_planned: int  # prompts asked about (both sides together when independent)
    n: int  # prompts compared: finite on both sides when paired, on either side when independent
    n_not_applicable: int = 0  # prompts the metric does not apply to
    n_unscorable: int = 0  # prompts left out with no finite value
    sd: float  # of the per-prompt differences (paired) or pooled (independent)
    mde: float  # minimum detectable effect at 80 % power, two-sided; NaN where the test cannot reach ALPHA
    effect_size: float  # Hedges' g: g_av when paired, pooled-SD g when independent


class Steerability(_Record):
    """Does the steering move every prompt, or only the mean (Tan et al., 2024)? Over the `n` prompts
    of one comparison with a per-prompt effect (the mean of its samples, steered − unsteered):
    `wrong_way` moved against the expected direction (an effect of exactly 0 is a tie: not wrong-way,
    but counted in n), their share with an exact (Clopper-Pearson) interval, and the SD of the
    per-prompt effects with a chi-square interval (exact for normal effects, too narrow for
    heavy-tailed ones). Without an expected direction only the spread is defined. A per-prompt effect
    includes the prompt's sampling noise: with few samples per prompt the spread exceeds that of the
    prompts' true effects and the wrong-way share is pulled toward one half."""

    n: int  # prompts with a finite per-prompt effect
    wrong_way: int | None = None  # None without an expected direction
    ties: int = 0  # prompts whose effect is exactly 0
    share: float  # wrong_way / n; NaN without a direction or a prompt
    share_ci_low: float
    share_ci_high: float
    sd: float  # of the per-prompt effects (the estimate's sd when paired)
    sd_ci_low: float
    sd_ci_high: float
    confidence: float = 0.95


class EffectRecord(_Record):
    """One metric of one steered condition of one task, paired by prompt against unsteered."""

    task: str
    condition: str
    metric: str
    expected_direction: Direction | None = None
    headline: bool = False
    estimate: Estimate  # steered − unsteered
    n_excluded: int = 0  # sample values dropped as non-finite or flagged, both sides
    p_adjusted: float
    significant: bool
    steerability: Steerability | None = None  # None in runs written before it was recorded


class FluencyRecord(_Record):
    """Fluency cost: Δ mean log-perplexity of completions under the judge (steered − unsteered)."""

    task: str
    condition: str
    judge: str
    estimate: Estimate
    ppl_ratio: float  # exp of the estimate's point
    metric: str = FLUENCY_METRIC  # the scorer metric it compares (its scorer declares it the fluency metric)
    p_adjusted: float  # Holm, in the run's confirmatory family
    significant: bool


class Headline(_Record):
    """Per task and condition: the headline metric's effect, its fluency cost and the verdict."""

    task: str
    condition: str
    metric: str
    expected_direction: Direction
    estimate: Estimate  # the headline metric, steered − unsteered (its MDE from the same deltas)
    significant: bool
    moved_as_expected: bool
    fluency: Estimate | None = None  # Δ log-perplexity, if the task scores it
    ppl_ratio: float | None = None
    specific: Estimate | None = None  # steered − mean of the matched random controls, if any
    label: str | None = None  # "disruption, not direction" when the negated vector moves it the same way
    steerability: Steerability | None = None  # the headline effect's; None in older runs and baselines


class PromptSummary(_Record):
    """Per-prompt means of one metric, kept so baselines can be compared paired by prompt."""

    task: str
    condition: str
    metric: str
    prompts: dict[str, list[float]]  # prompt identity -> [mean of the reference, mean of the condition]
    reference: str = "unsteered"  # or "random controls": the mean of the matched random controls


class ControlRecord(_Record):
    """Is it the direction? For one metric of one steered condition: the specific effect
    (`kind="specific"`: steered − mean of its matched random controls) or the direction check
    (`kind="direction"`: steered − its negation), paired by prompt. `label` is "disruption, not
    direction" when the negated vector moves the metric significantly the same way as the steered."""

    task: str
    condition: str
    metric: str
    kind: Literal["specific", "direction"]
    reference: str  # the control condition(s) compared with
    expected_direction: Direction | None = None
    headline: bool = False
    estimate: Estimate  # steered − the reference
    p_adjusted: float
    significant: bool
    label: str | None = None


class OffTargetRecord(_Record):
    """Off-target cost of one steered condition on fixed neutral text, free of sampling noise:
    per-token KL(unsteered ‖ steered) of the next-token distributions (mean over texts, and the
    95th percentile over tokens) and the text's Δ log-perplexity; CIs are 95 % over texts."""

    task: str
    condition: str
    n_texts: int
    n_tokens: int
    mean_kl: float
    mean_kl_ci_low: float
    mean_kl_ci_high: float
    p95_kl: float
    p95_kl_ci_low: float
    p95_kl_ci_high: float
    delta_logppl: float
    delta_logppl_ci_low: float
    delta_logppl_ci_high: float


class CapabilityRecord(_Record):
    """Capability retention of one steered condition: accuracy and mean log P(correct answer) on
    the bundled cloze items, unsteered → steered, with the paired change and its CI over items."""

    task: str
    condition: str
    n_items: int
    accuracy_unsteered: float
    accuracy_steered: float
    accuracy_diff: float
    accuracy_ci_low: float
    accuracy_ci_high: float
    logprob_unsteered: float
    logprob_steered: float
    logprob_diff: float
    logprob_ci_low: float
    logprob_ci_high: float
    broken: list[str] = Field(default_factory=list)  # items right unsteered, wrong steered


class TopicRatioRecord(_Record):
    """The ActAdd paper's picture for a topic task: the perplexity ratio (steered / unsteered) of
    texts binned by their share of topic words (`low`, `high`], with a 95 % CI over texts."""

    task: str
    condition: str
    bin: str
    low: float
    high: float
    n: int
    ratio: float
    ratio_ci_low: float
    ratio_ci_high: float


class TaskInfo(_Record):
    name: str
    kind: str
    description: str = ""
    conditions: dict[str, dict[str, Any]] = Field(default_factory=dict)  # name -> resolved steering
    n_prompts: int = 0
    prompt_ids: list[str] = Field(default_factory=list)  # identity of each prompt, in task order


class LedgerEntry(_Record):
    """What steering hooks did at one site (`L5.resid`, or a prompting preamble's
    `prompt.instruction`) in one forward kind ("prompt": the prompt's pass; "decode": generation
    steps): the positions changed and the total norm added. The one shape of the ledger: per
    sequence (the engine's `Generation`), per sample (samples.jsonl) and, with the condition,
    summed over its samples (`LedgerRecord`, run.json and baselines)."""

    site: str
    kind: str
    positions: int  # positions changed
    norm: float  # total norm added


def ledger_entries(data: Any) -> Any:
    """A ledger as entries; samples.jsonl of schema 3 wrote `{site: {kind: [positions, norm]}}`."""
    if isinstance(data, dict):
        return [{"site": site, "kind": kind, "positions": int(n), "norm": norm}
                for site, kinds in data.items() for kind, (n, norm) in kinds.items()]
    return data


class LedgerRecord(LedgerEntry):
    """A condition's ledger entry summed over its samples."""

    task: str
    condition: str
    samples: int

    @property
    def positions_per_sample(self) -> float:
        return self.positions / self.samples if self.samples else 0.0

    @property
    def mean_norm(self) -> float:
        """Mean norm added per changed position."""
        return self.norm / self.positions if self.positions else 0.0


class ConditionCounts(_Record):
    """How many samples a condition has and how many are degenerate, in three disjoint kinds:
    flagged (excluded), empty (no token), unscorable (tokens, but a text some scorer cannot score:
    whitespace only, no words for a word list, too short)."""

    task: str
    condition: str
    samples: int
    flagged: int
    empty: int
    unscorable: int = 0

    @property
    def degenerate_share(self) -> float:
        """Share of samples flagged, empty or unscorable: none says all about the behaviour."""
        return (self.flagged + self.empty + self.unscorable) / self.samples if self.samples else 0.0


class RunResult(_Record):
    """Everything needed to read, report and reproduce a run."""

    schema_version: int = SCHEMA_VERSION
    config: dict[str, Any]
    config_hash: str
    model: dict[str, Any]
    versions: dict[str, str]
    started: str
    finished: str
    tasks: list[TaskInfo]
    effects: list[EffectRecord]
    fluency_cost: list[FluencyRecord]
    headlines: list[Headline]
    per_prompt: list[PromptSummary] = Field(default_factory=list)
    flagged_samples: int = 0
    counts: list[ConditionCounts] = Field(default_factory=list)
    controls: list[ControlRecord] = Field(default_factory=list)
    off_target: list[OffTargetRecord] = Field(default_factory=list)
    capability: list[CapabilityRecord] = Field(default_factory=list)
    topic_ratio: list[TopicRatioRecord] = Field(default_factory=list)
    ledger: list[LedgerRecord] = Field(default_factory=list)
    notes: list[str] = Field(default_factory=list)
    # seconds this invocation spent per phase ("generate.TASK", "score.TASK.SCORER"); a resumed
    # run counts only the samples it generated itself
    timings: dict[str, float] = Field(default_factory=dict)


class SampleRecord(_Record):
    """One line of samples.jsonl: a completion and every score it got."""

    key: str  # the sample's identity (what determines it), see harness.pipeline.plan
    task: str
    condition: str
    prompt_index: int
    prompt_id: str
    prompt: str
    sample: int
    seed: int
    completion: str
    token_ids: list[int]
    prompt_ids: list[int]
    scores: dict[str, float] = Field(default_factory=dict)
    reasons: dict[str, str] = Field(default_factory=dict)
    token_logprobs: list[float] | None = None
    # a judge's raw reply per rating ("judge.concept"), or in expected mode its rating probabilities
    replies: dict[str, str] = Field(default_factory=dict)
    flagged: str | None = None  # why the sample is excluded (e.g. non-finite logits)
    # what the steering hooks did to this sample, one entry per site and forward kind
    ledger: Annotated[list[LedgerEntry], BeforeValidator(ledger_entries)] = Field(default_factory=list)
