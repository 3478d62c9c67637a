"""Who answers the judge's questions: a model loaded in this process, or any OpenAI-compatible
chat-completions endpoint. Both take chat conversations and report each reply as it comes."""

from __future__ import annotations

import email.utils
import os
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from typing import TYPE_CHECKING, Any, Protocol

from tqdm.auto import tqdm

from harness.errors import UserError

if TYPE_CHECKING:
    import httpx

    from harness.models import LoadedModel

Conversation = list[dict[str, str]]
RATINGS = ("0", "1", "2")
MAX_WAIT = 120.0  # seconds: the longest backoff or Retry-After the served judge waits


class JudgeBackend(Protocol):
    """`identity`: what a verdict depends on besides the question (weights hash, or endpoint +
    model, and the reply length); part of every cache key."""

    identity: str

    def check(self) -> None: ...

    def replies(self, conversations: Sequence[Conversation], done: Callable[[int, str], None]) -> None: ...


class LocalJudge:
    """A loaded model answering greedily (steering off), in batches; the tokenizer's chat template
    when it has one (as an OpenAI-compatible server renders the same conversation), else the
    messages as plain text, BOS first."""

    def __init__(self, lm: LoadedModel, max_tokens: int, batch_size: int):
        self.lm, self.max_tokens, self.batch_size = lm, max_tokens, batch_size
        dtype = str(next(lm.model.parameters()).dtype).removeprefix("torch.")
        self.identity = f"local:{lm.sha256}:{dtype}:max_tokens={max_tokens}"

    def check(self) -> None:
        """A local judge is loaded before it gets here: nothing to reach."""

    def encode(self, conversation: Conversation, reply_start: str = "") -> list[int]:
        """The question's tokens, the judge's turn opened (and begun with `reply_start`)."""
        from harness.models.tokens import encode

        tok = self.lm.tokenizer
        start = tok(reply_start, add_special_tokens=False).input_ids if reply_start else []
        if getattr(tok, "chat_template", None):
            rendered = tok.apply_chat_template(conversation, add_generation_prompt=True, tokenize=True,
                                               return_dict=True)
            return [*rendered["input_ids"], *start]
        return [*encode(tok, "\n\n".join(m["content"] for m in conversation) + "\n\n", use_bos=True), *start]

    def rating_token_ids(self, reply_start: str = "") -> list[int]:
        """The token of each rating "0", "1", "2" as the tokenizer writes it after `reply_start`:
        expected mode needs `reply_start + r` to tokenize as `reply_start`'s tokens plus one (a
        tokenizer that glues the space to the digit, " 2", never writes "2" after "Rating: ")."""
        tok = self.lm.tokenizer
        start = tok(reply_start, add_special_tokens=False).input_ids if reply_start else []
        ids = [tok(reply_start + r, add_special_tokens=False).input_ids for r in RATINGS]
        if any(len(i) != len(start) + 1 or i[:-1] != start for i in ids):
            raise UserError(f"judge {self.lm.name}: after the rubric's answer prefix {reply_start!r} the "
                            f"ratings {RATINGS} are not one token each ({ids} after {start}); "
                            "use mode: parse, or an answer_prefix the ratings extend by one token")
        return [i[-1] for i in ids]

    def _batches(self, conversations: Sequence[Conversation], reply_start: str = ""
                 ) -> list[tuple[list[int], list[list[int]]]]:
        encoded = [self.encode(c, reply_start) for c in conversations]
        order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]))  # similar lengths together
        return [(idx, [encoded[i] for i in idx]) for start in range(0, len(order), self.batch_size)
                for idx in [order[start : start + self.batch_size]]]

    def replies(self, conversations: Sequence[Conversation], done: Callable[[int, str], None]) -> None:
        """Greedy replies of at most `max_tokens` tokens, special tokens dropped."""
        import torch
        from transformers import GenerationConfig

        from harness.models.tokens import left_pad

        tok, model = self.lm.tokenizer, self.lm.model
        config = GenerationConfig(do_sample=False, max_new_tokens=self.max_tokens,
                                  eos_token_id=model.generation_config.eos_token_id or tok.eos_token_id,
                                  pad_token_id=tok.pad_token_id)
        for idx, rows in tqdm(self._batches(conversations), desc="judge", disable=None):
            ids, mask = left_pad(rows, tok.pad_token_id, self.lm.device)
            with torch.no_grad():
                out = model.generate(input_ids=ids, attention_mask=mask, generation_config=config)
            for i, text in zip(idx, tok.batch_decode(out[:, ids.shape[1]:], skip_special_tokens=True),
                               strict=True):
                done(i, text)

    def rating_probabilities(self, conversations: Sequence[Conversation],
                             done: Callable[[int, list[float]], None], reply_start: str = "") -> None:
        """P("0"), P("1"), P("2") as the reply's next token after `reply_start`, under the full
        softmax (their sum is the mass the judge puts on answering with a rating at all)."""
        import torch

        from harness.models.tokens import left_pad

        ratings = torch.tensor(self.rating_token_ids(reply_start), device=self.lm.device)
        for idx, rows in tqdm(self._batches(conversations, reply_start), desc="judge", disable=None):
            ids, mask = left_pad(rows, self.lm.tokenizer.pad_token_id, self.lm.device)
            positions = (mask.cumsum(dim=1) - 1).clamp(min=0)  # a row scores the same in any batch
            with torch.no_grad():
                logits = self.lm.model(input_ids=ids, attention_mask=mask, position_ids=positions,
                                       logits_to_keep=1, use_cache=False).logits[:, -1].float()
            probs = torch.softmax(logits, dim=-1)[:, ratings]
            for i, p in zip(idx, probs.tolist(), strict=True):
                done(i, p)


class ServedJudge:
    """An OpenAI-compatible endpoint: POST `{base_url}/chat/completions` at temperature 0, at most
    `concurrency` requests at a time, each retried on 429, 5xx, timeouts and dropped connections
    with exponential backoff (or the server's Retry-After). The key is read from the environment
    variable named `api_key_env` at each request and sent only in the Authorization header."""

    def __init__(self, base_url: str, model: str, api_key_env: str | None, *, concurrency: int,
                 timeout: float, max_retries: int, max_tokens: int, backoff: float = 1.0):
        self.base_url, self.model, self.api_key_env = base_url.rstrip("/"), model, api_key_env
        self.concurrency, self.timeout, self.max_retries = concurrency, timeout, max_retries
        self.max_tokens, self.backoff = max_tokens, backoff
        self.identity = f"openai:{self.base_url}:{model}:max_tokens={max_tokens}"

    def _headers(self) -> dict[str, str]:
        if self.api_key_env is None:
            return {}
        key = os.environ.get(self.api_key_env)
        if not key:
            raise UserError(f"judge endpoint {self.base_url}: the environment variable {self.api_key_env} "
                            "(its API key) is not set")
        return {"Authorization": f"Bearer {key}"}

    def check(self) -> None:
        """The key's variable is set, the endpoint answers GET /models, and serves the model."""
        import httpx

        try:
            r = httpx.get(f"{self.base_url}/models", headers=self._headers(), timeout=self.timeout)
        except httpx.HTTPError as err:
            why = f"{type(err).__name__}: {err}"
            raise UserError(f"judge endpoint {self.base_url} cannot be reached ({why}); is the server "
                            "running, and is base_url right (it ends in /v1)?") from None
        if r.status_code in (401, 403):
            raise UserError(f"judge endpoint {self.base_url} refused the key in {self.api_key_env} "
                            f"(HTTP {r.status_code})")
        if r.status_code >= 400:
            raise UserError(f"judge endpoint {self.base_url}: GET /models answered HTTP {r.status_code}")
        try:
            served = [m["id"] for m in r.json()["data"]]
        except (ValueError, KeyError, TypeError):
            return  # not every compatible server lists its models
        if served and self.model not in served:
            raise UserError(f"judge endpoint {self.base_url} does not serve model {self.model!r} "
                            f"(it serves: {', '.join(map(str, served[:20]))})")

    def replies(self, conversations: Sequence[Conversation], done: Callable[[int, str], None]) -> None:
        import httpx

        with httpx.Client(timeout=self.timeout) as client, \
                ThreadPoolExecutor(max_workers=self.concurrency) as pool:
            futures = {pool.submit(self._ask, client, c): i for i, c in enumerate(conversations)}
            try:
                for future in tqdm(as_completed(futures), total=len(futures), desc="judge", disable=None):
                    done(futures[future], future.result())
            finally:
                for future in futures:
                    future.cancel()

    def _ask(self, client: httpx.Client, conversation: Conversation) -> str:
        import httpx

        body = {"model": self.model, "messages": conversation, "temperature": 0,
                "max_tokens": self.max_tokens}
        failure, wait = "", 0.0
        for attempt in range(self.max_retries + 1):
            if attempt:
                time.sleep(wait)
            try:
                r = client.post(f"{self.base_url}/chat/completions", json=body, headers=self._headers())
            except (httpx.TimeoutException, httpx.TransportError) as err:
                failure, wait = type(err).__name__, self._backoff(attempt)
                continue
            if r.status_code == 429 or r.status_code >= 500:
                asked = _retry_after(r)
                failure, wait = f"HTTP {r.status_code}", self._backoff(attempt) if asked is None else asked
                continue
            if r.status_code >= 400:
                raise UserError(f"judge endpoint {self.base_url}: HTTP {r.status_code}: {r.text[:300]}")
            return _content(r, self.base_url)
        raise UserError(f"judge endpoint {self.base_url}: {failure} after {self.max_retries} retries")

    def _backoff(self, attempt: int) -> float:
        return min(MAX_WAIT, self.backoff * 2 ** attempt)


def _retry_after(response: httpx.Response) -> float | None:
    """The server's Retry-After in seconds (a number or an HTTP date), capped at `MAX_WAIT`."""
    value = response.headers.get("retry-after")
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            seconds = email.utils.parsedate_to_datetime(value).timestamp() - time.time()
        except (TypeError, ValueError):
            return None
    return min(MAX_WAIT, max(0.0, seconds))


def _content(response: httpx.Response, base_url: str) -> str:
    try:
        data: Any = response.json()
        content = data["choices"][0]["message"]["content"]
    except (ValueError, KeyError, IndexError, TypeError):
        raise UserError(f"judge endpoint {base_url}: not a chat completion: {response.text[:300]}") from None
    return content or ""
