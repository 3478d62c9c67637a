"""An LLM judge rating each completion on the AxBench scales: concept, instruction, fluency (0-2)
and their harmonic mean, backed by a local model or any OpenAI-compatible endpoint."""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import re
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import yaml
from pydantic import Field, ValidationError, field_validator, model_validator

from harness.errors import UserError
from harness.registry import register_scorer
from harness.schema.spec import Spec
from harness.scorers.base import BaseScorer, Sample, Score, ScoringContext, no_text
from harness.scorers.judge_backends import RATINGS

if TYPE_CHECKING:
    from harness.scorers.judge_backends import Conversation, JudgeBackend, LocalJudge
    from harness.scorers.judge_cache import VerdictCache

CRITERIA = ("concept", "instruction", "fluency")
RUBRICS = Path(__file__).resolve().parent / "data" / "rubrics"
CACHE_ENV = "HARNESS_JUDGE_CACHE"  # the SQLite file of verdicts, or "off" (default: see judge_cache)
_FIELD = re.compile(r"\{(concept|instruction|completion)\}")
# A verdict: "[[2]]", "Rating: 2", or a reply whose only number is the rating, at its start.
_BRACKETED = re.compile(r"\[\[\s*(\d+)\s*\]\]")
# a number that goes on as another number ("0-2", "1 or 2", "1,5", "1e2", "0x2") is not a rating
_GOES_ON = r"(?![.,]?\d|[eEx]\d)(?!\s*\**\s*(?:[-–—,]|\bor\b|\bto\b|\band\b)\s*\**\s*\d)"
_LABELLED = re.compile(r"(?i)\brating\s*(?:is|:|=)?\s*\**\s*(\d+(?:\.\d+)?)" + _GOES_ON)
_NUMBER = re.compile(r"\d+(?:\.\d+)?")
_LEADING = re.compile(r"^[^\w\-−–]*(\d+(?:\.\d+)?)")  # a minus sign makes it no rating

log = logging.getLogger(__name__)


class Rubric(Spec):
    """Three question templates, each answered by one rating 0-2. Placeholders: `{concept}`,
    `{instruction}` (the prompt), `{completion}`; `system`: the judge's system message;
    `answer_prefix`: in expected mode, the start of the judge's reply, after which the rating
    token is read (parse mode never uses it: a served judge cannot be given one)."""

    name: str = Field(min_length=1)
    version: int = Field(ge=1)
    system: str | None = None
    answer_prefix: str = ""
    concept: str
    instruction: str
    fluency: str

    @model_validator(mode="after")
    def _placeholders(self) -> Rubric:
        needed = {"concept": ("concept", "completion"), "instruction": ("instruction", "completion"),
                  "fluency": ("completion",)}
        for criterion, needs in needed.items():
            if missing := [n for n in needs if f"{{{n}}}" not in getattr(self, criterion)]:
                raise ValueError(f"the {criterion} template lacks {', '.join(f'{{{n}}}' for n in missing)}")
        return self

    def conversation(self, criterion: str, prompt: str, completion: str, concept: str | None) -> Conversation:
        """The chat messages asking for one rating (the placeholders filled in one pass, so a
        completion that contains "{concept}" stays as it is)."""
        fields = {"concept": concept or "", "instruction": prompt, "completion": completion}
        user = _FIELD.sub(lambda m: fields[m.group(1)], getattr(self, criterion))
        return [*([{"role": "system", "content": self.system}] if self.system else []),
                {"role": "user", "content": user}]


def bundled_rubrics() -> list[str]:
    return sorted(p.stem for p in RUBRICS.glob("*.yaml"))


def load_rubric(name_or_path: str) -> tuple[Rubric, str]:
    """A bundled rubric by name, or a rubric file (YAML or JSON); with its content hash."""
    bundled = RUBRICS / f"{name_or_path}.yaml"
    path = bundled if bundled.is_file() else Path(name_or_path).expanduser()
    if not path.is_file():
        raise UserError(f"rubric {name_or_path!r} is neither a bundled rubric "
                        f"({', '.join(bundled_rubrics())}) nor a file")
    try:
        rubric = Rubric.model_validate(yaml.safe_load(path.read_text()))
    except (yaml.YAMLError, ValidationError) as err:
        raise UserError(f"rubric {path}: {err}") from None
    sha = hashlib.sha256(json.dumps(rubric.model_dump(), sort_keys=True).encode()).hexdigest()
    return rubric, sha


def parse_rating(reply: str) -> int | None:
    """The rating a reply gives, or None when it gives none or several: the one `[[r]]`, else the
    one `Rating: r`, else the reply's only number if the reply starts with it; r is 0, 1 or 2
    ("0, 1 or 2", "1.5" and "3" are no rating)."""
    for found in (set(_BRACKETED.findall(reply)), set(_LABELLED.findall(reply))):
        if found:
            return int(found.pop()) if len(found) == 1 and found <= set(RATINGS) else None
    lead = _LEADING.match(reply)
    alone = lead is not None and len(_NUMBER.findall(reply)) == 1
    return int(lead.group(1)) if alone and lead.group(1) in RATINGS else None


def harmonic_mean(ratings: Sequence[float]) -> float:
    """AxBench's sample score: the harmonic mean of the ratings, 0 when any is 0."""
    from scipy.stats import hmean

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # scipy warns on a zero, and returns 0
        return float(hmean(ratings))


class JudgeParams(Spec):
    """`backend`: `local` (`model`: a name load_model takes; None = the generation model) or
    `openai` (`base_url` ending in /v1, `model`, `api_key_env`: the NAME of the environment
    variable holding the key; `concurrency`, `timeout` seconds, `max_retries`). `rubric`: a
    bundled rubric or a rubric file. `mode`: `parse` reads the rating from the greedy reply of at
    most `max_tokens` tokens; `expected` (local only) is the probability-weighted rating of the
    tokens "0", "1", "2" as the reply's next token after the rubric's `answer_prefix`, NaN when
    their total probability is below `min_mass`. `concept`: the concept rated (else each prompt's
    `concept` field)."""

    backend: Literal["local", "openai"] = "local"
    model: str | None = None
    base_url: str | None = None
    api_key_env: str | None = None
    concurrency: int = Field(4, ge=1)
    timeout: float = Field(60.0, gt=0)
    max_retries: int = Field(5, ge=0)
    rubric: str = "axbench"
    mode: Literal["parse", "expected"] = "parse"
    max_tokens: int = Field(8, ge=1)
    min_mass: float = Field(0.1, ge=0, le=1)
    batch_size: int = Field(16, ge=1)
    concept: str | None = None

    @model_validator(mode="after")
    def _backend_fields(self) -> JudgeParams:
        if self.backend == "openai":
            if not self.base_url or not self.model:
                raise ValueError("backend openai needs base_url and model")
            if self.mode == "expected":
                raise ValueError("mode expected needs the judge's logits: backend local")
        elif self.base_url or self.api_key_env:
            raise ValueError("base_url and api_key_env are for backend openai")
        return self

    @field_validator("api_key_env")
    @classmethod
    def _a_variable_name(cls, name: str | None) -> str | None:
        if name is not None and not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):  # not echoed: a key?
            raise ValueError("must be the NAME of an environment variable (letters, digits, _), never "
                             "the key itself: the name is written to run.json")
        return name

    @field_validator("base_url")
    @classmethod
    def _no_credentials_in_the_url(cls, url: str | None) -> str | None:
        from urllib.parse import urlsplit

        if url is not None and ((parts := urlsplit(url)).username or parts.password or parts.query):
            raise ValueError("a user, password or query in base_url would be written to run.json: give the "
                             "key through api_key_env (the name of the variable that holds it)")
        return url

    @field_validator("rubric")
    @classmethod
    def _rubric_loads(cls, rubric: str) -> str:
        load_rubric(rubric)  # a missing or malformed rubric fails `harness validate`, with its line
        return rubric


@register_scorer
class JudgeScorer(BaseScorer):
    """`concept`, `instruction`, `fluency`: the judge's 0-2 ratings, one question each; `score`:
    their harmonic mean (0 when any is 0), as AxBench. A reply without a rating is NaN with the
    raw reply in its reason (and `Score.detail["replies"]`), never 0; an empty completion is not
    sent. Verdicts are cached (SQLite) by judge identity, rubric hash, mode and text judged."""

    name = "judge"
    metrics = (*CRITERIA, "score")
    Params = JudgeParams

    def __init__(self, params: JudgeParams):
        super().__init__(params)
        self.rubric, self.rubric_sha = load_rubric(params.rubric)
        self.backend: JudgeBackend | None = None
        self._cache: VerdictCache | None = None

    def preflight(self, ctx: ScoringContext) -> None:
        """Load the local judge, or reach the served one (and check its key's variable), now."""
        if self.backend is not None:
            return
        from harness.scorers.judge_backends import LocalJudge, ServedJudge

        p = self.params
        if p.backend == "openai":
            backend: JudgeBackend = ServedJudge(p.base_url, p.model, p.api_key_env, concurrency=p.concurrency,
                                                timeout=p.timeout, max_retries=p.max_retries,
                                                max_tokens=p.max_tokens)
        else:
            if ctx.load_judge is not None:
                lm = ctx.load_judge(p.model)
            else:
                from harness.models import DEFAULT_MODEL, load_model

                lm = load_model(p.model or DEFAULT_MODEL)
            backend = LocalJudge(lm, p.max_tokens, p.batch_size)
            if p.mode == "expected":
                backend.rating_token_ids(self.rubric.answer_prefix)
        backend.check()
        self.backend = backend

    @property
    def cache(self) -> VerdictCache:
        from harness.scorers.judge_cache import VerdictCache, default_path

        if self._cache is None:
            where = os.environ.get(CACHE_ENV, "").strip()
            path = None if where.lower() in ("off", "0", "false", "no", "none") else \
                Path(where).expanduser() if where else default_path()
            self._cache = VerdictCache(path)
        return self._cache

    def score(self, samples: Sequence[Sample], ctx: ScoringContext) -> list[Score]:
        from harness.scorers.judge_cache import verdict_key

        self.preflight(ctx)
        assert self.backend is not None
        p = self.params
        concepts = [p.concept or s.meta.get("concept") for s in samples]
        asks: dict[tuple[int, str], str] = {}  # (sample, criterion) -> verdict key
        questions: dict[str, Conversation] = {}
        for i, (s, concept) in enumerate(zip(samples, concepts, strict=True)):
            if not s.completion.strip():
                continue
            for c in CRITERIA:
                if c == "concept" and not concept:
                    continue
                asked_about = concept if "{concept}" in getattr(self.rubric, c) else None  # keyed iff asked
                key = verdict_key(self.backend.identity, self.rubric_sha, p.mode, c, s.prompt, s.completion,
                                  asked_about)
                asks[i, c] = key
                questions.setdefault(key, self.rubric.conversation(c, s.prompt, s.completion, concept))
        verdicts = self.cache.get_many(questions)
        self._ask([k for k in questions if k not in verdicts], questions, verdicts)
        scores = [self._score_one(s, concept, {c: verdicts[asks[i, c]] for c in CRITERIA if (i, c) in asks})
                  for i, (s, concept) in enumerate(zip(samples, concepts, strict=True))]
        if unparsed := sum(any(r.startswith("unparseable") for r in s.reasons.values()) for s in scores):
            log.warning("judge: %d of %d samples got a reply without a rating (NaN, reply kept)",
                        unparsed, len(samples))
        return scores

    def _ask(self, todo: list[str], questions: dict[str, Conversation], verdicts: dict[str, Any]) -> None:
        """Ask the judge every question in `todo`; each verdict goes into `verdicts` and the cache
        (in chunks as they come, so an interrupted run keeps what it paid for)."""
        if not todo:
            return
        fresh: dict[str, Any] = {}

        def done(index: int, answer: str | list[float]) -> None:
            key = todo[index]
            fresh[key] = {"reply": answer} if isinstance(answer, str) else {"probabilities": answer}
            verdicts[key] = fresh[key]
            if len(fresh) >= 64:
                self.cache.put_many(fresh)
                fresh.clear()

        conversations = [questions[k] for k in todo]
        try:
            if self.params.mode == "expected":
                local: LocalJudge = self.backend  # type: ignore[assignment]
                local.rating_probabilities(conversations, done, self.rubric.answer_prefix)
            else:
                self.backend.replies(conversations, done)  # type: ignore[union-attr]
        finally:
            self.cache.put_many(fresh)

    def _score_one(self, sample: Sample, concept: str | None, verdicts: dict[str, dict[str, Any]]) -> Score:
        if not sample.completion.strip():
            return no_text(self.metrics, sample.completion)
        values: dict[str, float] = {}
        reasons: dict[str, str] = {}
        not_applicable: dict[str, str] = {}
        rubric = f"{self.rubric.name} v{self.rubric.version} {self.rubric_sha[:12]}"
        detail: dict[str, Any] = {"judge": self.backend.identity, "rubric": rubric}  # type: ignore[union-attr]
        if not concept:
            values["concept"] = values["score"] = math.nan
            not_applicable["concept"] = not_applicable["score"] = (
                "no concept (set the scorer's `concept` or the prompt's `concept` field)")
        for c, verdict in verdicts.items():
            values[c], why = self._rating(verdict)
            if why:
                reasons[c] = why
            kind = "replies" if "reply" in verdict else "probabilities"
            detail.setdefault(kind, {})[c] = next(iter(verdict.values()))
        if "score" not in values:
            missing = [c for c in CRITERIA if not math.isfinite(values[c])]
            values["score"] = math.nan if missing else harmonic_mean([values[c] for c in CRITERIA])
            if missing:
                reasons["score"] = f"no {' / '.join(missing)} rating"
        return Score(values, reasons, detail, not_applicable)

    def _rating(self, verdict: dict[str, Any]) -> tuple[float, str | None]:
        """A rating from a cached verdict, or NaN and why."""
        if "reply" in verdict:
            rating = parse_rating(verdict["reply"])
            return (float(rating), None) if rating is not None else \
                (math.nan, f"unparseable judge reply: {verdict['reply']!r}")
        probs = verdict["probabilities"]
        mass = sum(probs)
        if not math.isfinite(mass):
            return math.nan, f"unparseable: the judge's rating probabilities are not finite ({probs})"
        if mass < self.params.min_mass or mass <= 0:
            return math.nan, f"unparseable: the judge puts {mass:.3g} < min_mass on the rating tokens"
        return sum(r * q for r, q in enumerate(probs)) / mass, None
