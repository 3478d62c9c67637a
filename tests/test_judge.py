"""The judge scorer: verdict parsing, NaN never 0, the verdict cache, the served backend's retries
and key hygiene on a loopback stub, and parity with a real `transformers serve` endpoint."""

from __future__ import annotations

import json
import math
import os
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from harness.errors import UserError
from harness.pipeline.score import checked
from harness.scorers import make_scorer
from harness.scorers.base import Sample, ScoringContext, is_not_applicable
from harness.scorers.judge import harmonic_mean, load_rubric, parse_rating

ITEMS = [  # (instruction, completion, concept)
    ("Tell me about your weekend.", "We went to a wedding; the bride wore white and the flowers were lovely.",
     "weddings"),
    ("Explain how rain forms.", "Water vapour cools, condenses into droplets, and they fall as rain.",
     "weddings"),
    ("Write a sentence about dogs.", "dog dog the the wedding wedding cake cake cake", "weddings"),
    ("Describe the ocean.", "The ocean is vast and blue, full of fish and whales.", "the ocean"),
]


def samples(items=ITEMS) -> list[Sample]:
    return [Sample(p, c, "steered", meta={"concept": k}) for p, c, k in items]


@pytest.fixture(autouse=True)
def judge_cache(tmp_path, monkeypatch) -> Path:
    """Every test has its own verdict cache file."""
    path = tmp_path / "verdicts.sqlite"
    monkeypatch.setenv("HARNESS_JUDGE_CACHE", str(path))
    return path


class StubJudge:
    """A backend that answers every question with `reply` and counts the questions."""

    def __init__(self, reply: str, identity: str = "stub:a"):
        self.reply, self.identity, self.calls = reply, identity, 0

    def check(self) -> None: ...

    def replies(self, conversations, done) -> None:
        for i, _ in enumerate(conversations):
            self.calls += 1
            done(i, self.reply)


def stubbed(reply: str, identity: str = "stub:a", **params):
    scorer = make_scorer("judge", params)
    scorer.backend = StubJudge(reply, identity)
    return scorer


@pytest.mark.parametrize(("reply", "rating"), [
    ("2", 2), ("1.", 1), (" 0\n", 0), ("**2**", 2), ("Rating: 1", 1), ("The rating is 2 out of 2", 2),
    ("Explanation... Rating: [[0]]", 0), ("[[1]]", 1),
    ("0, 1 or 2", None), ("The text is 0, 1", None), ("1.5", None), ("3", None), ("12", None),
    ("[[1]] or [[2]]", None), ("Rating: 3", None), ("", None), ("The text is fluent.", None),
])
def test_parse_rating_takes_one_clear_rating_and_refuses_lists_and_out_of_scale(reply, rating):
    assert parse_rating(reply) == rating


def test_harmonic_mean_is_the_axbench_score_and_zero_when_any_rating_is_zero():
    for ratings in ([2, 2, 2], [1, 2, 2], [1, 1, 2], [0.5, 1.7, 2.0]):
        assert harmonic_mean(ratings) == pytest.approx(3 / sum(1 / r for r in ratings))
    assert harmonic_mean([0, 2, 2]) == 0.0


def test_unparseable_reply_is_nan_with_the_raw_reply_kept_never_zero(caplog):
    scorer = stubbed("I think this text is nice")
    scores = checked("judge", scorer, scorer.score(samples(), ScoringContext()), len(ITEMS))
    for s in scores:
        assert all(math.isnan(v) for v in s.values.values())  # never 0
        assert s.reasons["fluency"] == "unparseable judge reply: 'I think this text is nice'"
        assert s.reasons["score"] == "no concept / instruction / fluency rating"
        assert s.detail["replies"]["concept"] == "I think this text is nice"
        assert not is_not_applicable(s.record_reasons("judge")["judge.concept"])  # counted as unscorable
    assert "4 of 4 samples got a reply without a rating" in caplog.text


def test_ratings_and_harmonic_mean_from_parsed_replies():
    scores = stubbed("Rating: 1").score(samples(), ScoringContext())
    assert scores[0].values == {"concept": 1.0, "instruction": 1.0, "fluency": 1.0, "score": 1.0}
    assert scores[0].reasons == {} and scores[0].detail["rubric"].startswith("axbench v1 ")


def test_rescoring_with_the_same_judge_makes_no_judge_call_and_another_judge_rescores(judge_cache):
    first = stubbed("Rating: 2")
    first.score(samples(), ScoringContext())
    assert first.backend.calls == 3 * len(ITEMS) and judge_cache.is_file()

    again = stubbed("Rating: 0")  # a new scorer (a new process): only the SQLite file is shared
    scores = again.score(samples(), ScoringContext())
    assert again.backend.calls == 0
    assert [s.values["score"] for s in scores] == [2.0] * len(ITEMS)  # the cached verdicts

    other = stubbed("Rating: 1", identity="stub:b")
    assert [s.values["score"] for s in other.score(samples(), ScoringContext())] == [1.0] * len(ITEMS)
    assert other.backend.calls == 3 * len(ITEMS)

    other_mode = stubbed("Rating: 1", concept="the sea")  # another concept is another question
    other_mode.score(samples(), ScoringContext())
    assert other_mode.backend.calls == len(ITEMS)  # instruction and fluency verdicts are reused


def test_another_rubric_rescores(tmp_path):
    rubric, sha = load_rubric("axbench")
    own = tmp_path / "mine.yaml"
    own.write_text(json.dumps({**rubric.model_dump(), "name": "mine", "fluency": "Fluent? {completion}"}))
    stubbed("2").score(samples(), ScoringContext())
    mine = stubbed("2", rubric=str(own))
    mine.score(samples(), ScoringContext())
    assert mine.backend.calls == 3 * len(ITEMS) and load_rubric(str(own))[1] != sha  # keyed by its hash


def test_rubric_needs_its_placeholders(tmp_path):
    rubric, _ = load_rubric("axbench")
    bad = tmp_path / "bad.yaml"
    bad.write_text(json.dumps({**rubric.model_dump(), "concept": "Is it about it? {completion}"}))
    with pytest.raises(ValueError, match=r"concept template lacks \{concept\}"):
        make_scorer("judge", {"rubric": str(bad)})


def test_a_missing_rubric_fails_task_validation_at_its_line(tmp_path):
    from harness.tasks import load_task

    task = tmp_path / "t.yaml"
    task.write_text("name: t\nkind: topic\nprompts: [Say hi.]\n"
                    "steering: {method: actadd, layer: 3, coeff: 4, positive: Love, negative: Hate}\n"
                    "scorers:\n  judge: {rubric: no-such-rubric, concept: love}\n"
                    "metrics: {judge.score: increase}\nheadline: judge.score\n")
    with pytest.raises(UserError, match=r"t.yaml:6: scorers.judge: .*rubric 'no-such-rubric' is neither a "
                                        r"bundled rubric \(axbench\) nor a file"):
        load_task(str(task))


def test_empty_completion_is_not_sent_and_a_missing_concept_is_not_applicable():
    scorer = stubbed("2")
    got = scorer.score([Sample("Say hi.", "  ", "steered", meta={"concept": "x"}),
                        Sample("Say hi.", "Hello there.", "steered")], ScoringContext())
    assert scorer.backend.calls == 2  # instruction and fluency of the second sample only
    assert got[0].reasons["score"] == "whitespace-only completion"
    assert got[1].values["fluency"] == 2.0 and math.isnan(got[1].values["concept"])
    assert set(got[1].not_applicable) == {"concept", "score"}
    checked("judge", scorer, got, 2)


def test_params_refuse_mixed_backends():
    with pytest.raises(ValueError, match="needs base_url and model"):
        make_scorer("judge", {"backend": "openai"})
    with pytest.raises(ValueError, match="mode expected needs"):
        make_scorer("judge", {"backend": "openai", "base_url": "http://x/v1", "model": "m",
                              "mode": "expected"})
    with pytest.raises(ValueError, match="are for backend openai"):
        make_scorer("judge", {"base_url": "http://x/v1"})


# --- a loopback OpenAI-compatible stub, for retries and key hygiene -------------------------------

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class StubServer:
    """Answers GET /v1/models and POST /v1/chat/completions with `reply`; the first `fail` POSTs
    of each conversation get `status` (with the header Retry-After: `retry_after` unless None).
    Records every request's Authorization header, and the most POSTs it held at once; with
    `meet`, the first `meet` POSTs wait for each other (proof that they were in flight together)."""

    def __init__(self, reply: str = "Rating: 1", fail: int = 0, status: int = 429,
                 retry_after: str | None = "0", meet: int = 0):
        self.reply, self.fail, self.status, self.retry_after = reply, fail, status, retry_after
        self.posts: list[dict] = []
        self.auth: set[str] = set()
        self.lock = threading.Lock()
        self.in_flight = self.most_in_flight = 0
        self.meeting = threading.Barrier(meet, timeout=30) if meet else None
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None: ...

            def _send(self, code: int, body: dict, headers: dict | None = None) -> None:
                data = json.dumps(body).encode()
                self.send_response(code)
                for k, v in {"Content-Type": "application/json", **(headers or {})}.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                stub.auth.add(self.headers.get("Authorization", ""))
                self._send(200, {"object": "list", "data": [{"id": "stub-judge", "object": "model"}]})

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with stub.lock:
                    stub.auth.add(self.headers.get("Authorization", ""))
                    seen = sum(p == body for p in stub.posts)
                    stub.posts.append(body)
                    stub.in_flight += 1
                    stub.most_in_flight = max(stub.most_in_flight, stub.in_flight)
                    meet = stub.meeting is not None and len(stub.posts) <= stub.meeting.parties
                if meet:
                    stub.meeting.wait()
                with stub.lock:
                    stub.in_flight -= 1
                if seen < stub.fail:
                    after = {} if stub.retry_after is None else {"Retry-After": stub.retry_after}
                    self._send(stub.status, {"error": "slow down"}, after)
                else:
                    self._send(200, {"choices": [{"index": 0, "message": {"role": "assistant",
                                                                           "content": stub.reply}}]})

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base_url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def stub_server():
    servers: list[StubServer] = []
    yield lambda **kw: servers.append(StubServer(**kw)) or servers[-1]
    for s in servers:
        s.close()


def served(server: StubServer, **params):
    return make_scorer("judge", {"backend": "openai", "base_url": server.base_url, "model": "stub-judge",
                                 **params})


@pytest.mark.parametrize("status", [429, 503])
def test_served_judge_retries_429_and_5xx_then_succeeds(stub_server, status):
    server = stub_server(fail=1, status=status)
    scorer = served(server, concurrency=2, max_retries=2)
    scorer.preflight(ScoringContext())
    scores = scorer.score(samples(ITEMS[:2]), ScoringContext())
    assert [s.values["score"] for s in scores] == [1.0, 1.0]
    assert len(server.posts) == 2 * 3 * 2  # every question: one refusal, one answer
    assert server.posts[0]["temperature"] == 0 and server.posts[0]["model"] == "stub-judge"


def test_served_judge_sends_concurrency_requests_at_once_and_never_more(stub_server):
    server = stub_server(meet=3)  # the first three requests are answered only once all three are in
    scorer = served(server, concurrency=3)
    assert [s.values["score"] for s in scorer.score(samples(), ScoringContext())] == [1.0] * len(ITEMS)
    assert server.most_in_flight == 3 and len(server.posts) == 3 * len(ITEMS)


@pytest.mark.parametrize(("retry_after", "waits"), [
    ("7", [7.0, 7.0]),  # the server's Retry-After, in seconds
    (None, [1.0, 2.0]),  # else exponential backoff from 1 s
    ("Wed, 21 Oct 2015 07:28:00 GMT", [0.0, 0.0]),  # a date already past: no wait
])
def test_served_judge_waits_as_the_server_asks_or_backs_off_exponentially(stub_server, monkeypatch,
                                                                         retry_after, waits):
    import harness.scorers.judge_backends as backends

    slept: list[float] = []
    monkeypatch.setattr(backends.time, "sleep", slept.append)
    server = stub_server(fail=2, retry_after=retry_after)
    scorer = served(server, concurrency=1, max_retries=2, concept=None)
    (score,) = scorer.score([Sample("Say hi.", "Hello there.", "steered")], ScoringContext())
    assert score.values["fluency"] == 1.0 and len(server.posts) == 2 * 3
    assert slept == waits * 2  # two questions (no concept), two refusals each


def test_served_judge_gives_up_after_max_retries_naming_the_endpoint(stub_server):
    server = stub_server(fail=10, status=500)
    scorer = served(server, max_retries=1, concurrency=1)
    with pytest.raises(UserError, match=rf"{server.base_url}: HTTP 500 after 1 retries"):
        scorer.score(samples(ITEMS[:1]), ScoringContext())


def test_unreachable_endpoint_and_missing_key_fail_in_preflight(stub_server, monkeypatch):
    port = _free_port()  # nothing listens there
    with pytest.raises(UserError, match=rf"http://127.0.0.1:{port}/v1 cannot be reached"):
        make_scorer("judge", {"backend": "openai", "base_url": f"http://127.0.0.1:{port}/v1",
                              "model": "m"}).preflight(ScoringContext())
    monkeypatch.delenv("JUDGE_TEST_KEY", raising=False)
    server = stub_server()
    with pytest.raises(UserError, match="environment variable JUDGE_TEST_KEY"):
        served(server, api_key_env="JUDGE_TEST_KEY").preflight(ScoringContext())
    with pytest.raises(UserError, match="does not serve model 'other'"):
        make_scorer("judge", {"backend": "openai", "base_url": server.base_url,
                              "model": "other"}).preflight(ScoringContext())


def judged_task(folder: Path, base_url: str) -> Path:
    task = folder / "judged.yaml"
    task.write_text(
        "name: judged\nkind: topic\nprompts: [Tell me about your day., Describe a city.]\n"
        "steering: {method: actadd, layer: 3, coeff: 4, positive: Weddings, negative: Work}\n"
        f"scorers: {{judge: {{backend: openai, base_url: '{base_url}', model: stub-judge, "
        "api_key_env: JUDGE_TEST_KEY, concept: weddings}}\n"
        "metrics: {judge.score: increase}\nheadline: judge.score\n")
    return task


def test_an_unreachable_judge_fails_the_run_before_any_generation(smollm, tmp_path, monkeypatch):
    from harness.runner import RunOptions, run

    monkeypatch.setenv("JUDGE_TEST_KEY", "k")
    dead = f"http://127.0.0.1:{_free_port()}/v1"
    with pytest.raises(UserError, match=f"judge endpoint {dead} cannot be reached"):
        run(str(judged_task(tmp_path, dead)), tmp_path / "run", model=smollm,
            options=RunOptions(progress=False, samples=1, max_new_tokens=4))
    assert not list((tmp_path / "run").rglob("samples*.jsonl"))


def test_the_api_key_is_sent_but_never_written_to_any_run_file(smollm, stub_server, tmp_path, monkeypatch,
                                                              judge_cache):
    from harness.runner import RunOptions, run

    key = "sk-test-SECRET-4f1c9e"
    monkeypatch.setenv("JUDGE_TEST_KEY", key)
    server = stub_server(reply="Rating: 2", fail=1)
    out = tmp_path / "run"
    options = RunOptions(progress=False, samples=1, max_new_tokens=4)
    result = run(str(judged_task(tmp_path, server.base_url)), out, model=smollm, options=options)
    assert server.auth == {f"Bearer {key}"}  # the key went where it belongs, every time
    assert result.headlines[0].estimate.n == 2
    files = [p for p in [*out.rglob("*"), judge_cache] if p.is_file()]
    assert any(p.name == "run.json" for p in files) and any(p.name == "samples.jsonl" for p in files)
    for path in files:
        data = path.read_bytes()
        assert key.encode() not in data, path
    assert b"JUDGE_TEST_KEY" in (out / "run.json").read_bytes()  # only the variable's name is kept


# --- the local judge, and parity with a real OpenAI-compatible server -----------------------------

def _rating_probs_alone(lm, ids: list[int]) -> list[float]:
    import torch

    with torch.no_grad():
        logits = lm.model(torch.tensor([ids])).logits[0, -1].double()
    digits = [lm.tokenizer(r, add_special_tokens=False).input_ids[0] for r in "012"]
    return torch.softmax(logits, -1)[digits].tolist()


def _check_expected_mode(lm, encode) -> None:
    """The batched expected-mode ratings equal each question's forward pass alone."""
    scorer = make_scorer("judge", {"mode": "expected", "min_mass": 0.0})
    ctx = ScoringContext(lm=lm, load_judge=lambda name: lm)
    (score,) = scorer.score(samples(ITEMS[:1]), ctx)  # three questions of three lengths: a padded batch
    prefix = lm.tokenizer(scorer.rubric.answer_prefix, add_special_tokens=False).input_ids
    assert prefix  # the bundled rubric begins the judge's reply with "Rating: "
    for criterion in ("concept", "instruction", "fluency"):
        probs = _rating_probs_alone(lm, encode(scorer.rubric.conversation(criterion, *ITEMS[0])) + prefix)
        assert score.detail["probabilities"][criterion] == pytest.approx(probs, rel=1e-3, abs=1e-7)
        assert score.values[criterion] == pytest.approx((probs[1] + 2 * probs[2]) / sum(probs), rel=1e-3)
    assert score.values["score"] == pytest.approx(harmonic_mean([score.values[c] for c in
                                                                 ("concept", "instruction", "fluency")]))


def test_expected_rating_is_the_rating_tokens_softmax_of_an_unbatched_forward(smollm):
    def chat(conversation) -> list[int]:  # as an OpenAI-compatible server renders it
        return smollm.tokenizer.apply_chat_template(conversation, add_generation_prompt=True,
                                                    return_dict=True)["input_ids"]

    _check_expected_mode(smollm, chat)


def test_expected_rating_of_a_padded_row_under_absolute_positions(tmp_path):
    """GPT-2 adds absolute position embeddings: a left-padded row needs its own position ids.
    Without a chat template the question is plain text, BOS first."""
    import torch
    import transformers
    from conftest import _tiny_tokenizer

    from harness.models import load_model
    from harness.models.tokens import encode

    torch.manual_seed(0)
    config = transformers.GPT2Config(n_layer=2, n_embd=32, n_head=4, n_positions=2048, vocab_size=400,
                                     bos_token_id=0, eos_token_id=0, pad_token_id=0)
    transformers.GPT2LMHeadModel(config).save_pretrained(tmp_path / "gpt2")
    _tiny_tokenizer().save_pretrained(tmp_path / "gpt2")
    lm = load_model(str(tmp_path / "gpt2"))
    _check_expected_mode(lm, lambda conversation: encode(
        lm.tokenizer, "\n\n".join(m["content"] for m in conversation) + "\n\n", use_bos=True))


@pytest.mark.slow  # 249 s and 578 s measured on 2 cores shared with other jobs: a server start, 18 replies
def test_served_judge_on_a_real_server_gives_the_in_process_verdicts(smollm, tmp_path):
    """`transformers serve` on loopback, serving the very folder load_model reads SmolLM2 from."""
    import httpx

    from harness.models import gguf_cache

    folder = gguf_cache.cached_conversion(Path(smollm.source), smollm.sha256)
    if folder is None:
        pytest.skip("the model cache is off (HARNESS_CACHE=off): no model folder to serve")
    port, log = _free_port(), tmp_path / "serve.log"
    cli = Path(sys.executable).parent / "transformers"
    start = time.perf_counter()
    with log.open("w") as sink:
        server = subprocess.Popen(
            [str(cli), "serve", str(folder), "--host", "127.0.0.1", "--port", str(port), "--device", "cpu",
             "--dtype", "float32"], stdout=sink, stderr=subprocess.STDOUT,
            env={**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"})
    try:
        base_url = f"http://127.0.0.1:{port}/v1"
        for _ in range(240):
            assert server.poll() is None, f"transformers serve exited:\n{log.read_text()[-3000:]}"
            try:
                if httpx.get(f"{base_url}/models", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.5)
        items = samples(ITEMS[:3])
        ctx = ScoringContext(lm=smollm, load_judge=lambda name: smollm)
        local = make_scorer("judge", {"max_tokens": 6}).score(items, ctx)
        remote_scorer = make_scorer("judge", {"backend": "openai", "base_url": base_url, "model": str(folder),
                                              "max_tokens": 6, "concurrency": 2})
        remote_scorer.preflight(ctx)
        remote = remote_scorer.score(items, ctx)
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
    elapsed = time.perf_counter() - start
    pairs = [(a.detail["replies"][c], b.detail["replies"][c]) for a, b in zip(local, remote, strict=True)
             for c in ("concept", "instruction", "fluency")]
    same = sum(a == b for a, b in pairs)
    print(f"in-process vs served: {same}/{len(pairs)} identical replies; served test {elapsed:.0f} s")
    assert same == len(pairs), pairs
    for a, b in zip(local, remote, strict=True):
        assert a.values == pytest.approx(b.values, nan_ok=True)
