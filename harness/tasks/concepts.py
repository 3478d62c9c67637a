"""`--judge`: the judge scorer added to concept tasks, its harmonic mean their headline."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from pydantic import ValidationError

from harness import registry
from harness.errors import UserError
from harness.tasks import Task, with_settings

SERVED_SEP = "::"  # `--judge URL::MODEL`


def judge_params(judge: str, key_env: str | None = None, mode: str | None = None) -> dict[str, Any]:
    """The judge scorer's parameters for `--judge`: a model name or path (in-process, e.g.
    `smollm2-135m`) or `BASE_URL::MODEL` (an OpenAI-compatible endpoint, e.g.
    `http://localhost:8000/v1::Qwen2.5-0.5B`); `key_env`: the NAME of the environment variable
    holding the served judge's key (the key itself is never recorded); `mode`: parse or expected."""
    url, sep, model = judge.rpartition(SERVED_SEP)
    shown = _redacted(judge)
    if not sep and judge.startswith(("http://", "https://")):
        raise UserError(f"bad --judge {shown!r}: a served judge is BASE_URL::MODEL, e.g. "
                        f"{shown.rstrip('/')}::Qwen2.5-0.5B (the model name the server knows)")
    if sep and not (url and model):
        raise UserError(f"bad --judge {shown!r}: a served judge needs both BASE_URL and MODEL around ::")
    params: dict[str, Any] = ({"backend": "openai", "base_url": url, "model": model} if sep
                              else {"backend": "local", "model": judge})
    if key_env:
        params["api_key_env"] = key_env
    if mode:
        params["mode"] = mode
    try:
        registry.scorer_class("judge").Params.model_validate(params)
    except ValidationError as err:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'judge'}: {e['msg']}" for e in err.errors())
        raise UserError(f"bad --judge {shown!r}: {problems}") from None
    return params


def _redacted(judge: str) -> str:
    """`judge` as an error may show it: a URL without its user, password or query (they may hold a key)."""
    parts = urlsplit(judge)
    if not (parts.username or parts.password or parts.query):
        return judge
    host = parts.netloc.rpartition("@")[2]
    return parts._replace(netloc=host, query="").geturl() + " (credentials removed)"


def with_judge(task: Task, params: dict[str, Any]) -> Task:
    """A concept task scored by the judge too, its harmonic mean `judge.score` the headline (the
    task's other metrics stay declared; the three ratings are exploratory). Other tasks unchanged."""
    if task.spec.kind != "concept":
        return task
    spec = task.spec
    return with_settings(task, scorers={**spec.scorers, "judge": params},
                         metrics={**spec.metrics, "judge.score": "increase"}, headline="judge.score")
