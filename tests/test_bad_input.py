"""Bad input of every kind: exit code 2 and a message that names what is wrong (issue 8)."""

from __future__ import annotations

import contextlib
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from harness.cli import main
from harness.errors import UserError
from harness.tasks import load_task

GOOD = """\
name: t
kind: sentiment
prompts:
  - I hate you because
steering:
  method: actadd
  layer: 1
  coeff: 4
  positive: love
  negative: hate
scorers:
  vader: {}
metrics:
  vader.compound: increase
headline: vader.compound
"""


STEER = "method: actadd\n  layer: 1\n  coeff: 4\n  positive: love\n  negative: hate"


def edit(text: str, old: str, new: str) -> str:
    assert old in text, old
    return text.replace(old, new)


# (case id, task text or None, extra files, extra CLI args, key words of the message)
TASK_CASES = [
    ("missing field", edit(GOOD, "kind: sentiment\n", ""), {}, [], [":1:", "kind", "Field required"]),
    ("wrong type", GOOD + "samples: many\n", {}, [], [":16:", "samples", "'many'"]),
    ("unknown scorer", edit(GOOD, "vader: {}", "vaderr: {}"), {}, [],
     ["unknown scorer 'vaderr'", "sentiment", "keywords"]),
    ("unknown kind", edit(GOOD, "kind: sentiment", "kind: mood"), {}, [],
     [":2:", "kind", "'topic', 'sentiment', 'fact' or 'concept'", "'mood'"]),
    ("unknown method", edit(GOOD, "method: actadd", "method: rome"), {}, [],
     ["steering", "method", "'actadd'", "'rome'"]),
    ("unknown key", GOOD + "temperature: 2\n", {}, [], ["temperature", "Extra inputs"]),
    ("invalid yaml", GOOD + "scorers: [\n", {}, [], ["invalid YAML", ":17"]),
    ("not a mapping", "- just\n- a list\n", {}, [], [":1:", "expected a mapping"]),
    ("nan coefficient", edit(GOOD, "coeff: 4", "coeff: .nan"), {}, [], [":8:", "steering.coeff", "finite"]),
    ("empty contrast", edit(GOOD, "positive: love", 'positive: ""'), {}, [],
     ["steering.positive", "at least 1 character"]),
    ("headline not a metric", edit(GOOD, "headline: vader.compound", "headline: vader.pos"), {}, [],
     ["headline 'vader.pos'", "vader.compound"]),
    ("metric without scorer", GOOD.replace("vader.compound", "keywords.rate"), {}, [],
     ["metric 'keywords.rate'", "no scorer"]),
    ("bad direction", edit(GOOD, "vader.compound: increase", "vader.compound: up"), {}, [],
     ["metrics.vader.compound", "'increase' or 'decrease'"]),
    ("bad scorer params", edit(GOOD, "vader: {}", "vader: {colour: red}"), {}, [], ["colour"]),
    ("keywords without words", edit(GOOD, "vader: {}", "vader: {}\n  keywords: {}"), {}, [],
     ["keywords", "words"]),
    ("bad regex", edit(GOOD, "vader: {}", "vader: {}\n  keywords: {patterns: ['(']}"), {}, [],
     ["not a valid regular expression"]),
    ("prompts file missing", edit(GOOD, "  - I hate you because", "  file: nope.jsonl"), {}, [],
     ["prompts file not found", "nope.jsonl"]),
    ("prompts file empty", edit(GOOD, "  - I hate you because", "  file: p.jsonl"), {"p.jsonl": b""}, [],
     ["p.jsonl", "empty"]),
    ("prompts file not utf-8", edit(GOOD, "  - I hate you because", "  file: p.jsonl"),
     {"p.jsonl": b'{"text": "caf\xe9"}\n'}, [], ["p.jsonl", "not UTF-8"]),
    ("malformed jsonl", edit(GOOD, "  - I hate you because", "  file: p.jsonl"),
     {"p.jsonl": b'{"text": "a"}\n{"text": "b"\n'}, [], ["p.jsonl:2", "malformed JSON"]),
    ("jsonl wrong field", edit(GOOD, "  - I hate you because", "  file: p.jsonl"),
     {"p.jsonl": b'{"prompt": "a"}\n'}, [], ["p.jsonl:1", "no field 'text'", "prompt"]),
    ("no prompts", edit(GOOD, "  - I hate you because", "  []").replace("prompts:\n  []", "prompts: []"),
     {}, [], ["prompts", "no prompts"]),
    ("fact prompt without answers",
     edit(GOOD, "vader: {}", "fact: {}").replace("vader.compound", "fact.margin"),
     {}, [], ["prompts.0", "target", "original"]),
    ("vector file missing", edit(GOOD, STEER, "method: vector_file\n  path: v.pt\n  layer: 1"), {}, [],
     ["task.yaml:7", "steering vector file not found", "v.pt"]),
    ("vector file with a negative layer", edit(GOOD, STEER, "method: vector_file\n  path: v.pt\n  layer: -1"),
     {}, [], ["steering.layer", "greater than or equal to 0"]),
    ("mean_diff without pairs", edit(GOOD, STEER, "method: mean_diff\n  layer: 1\n  coeff: 2\n  pairs: []"),
     {}, [], ["steering.pairs", "at least one contrast pair"]),
    ("pairs file missing a field",
     edit(GOOD, STEER, "method: mean_diff\n  layer: 1\n  coeff: 2\n  pairs: {file: p.jsonl}"),
     {"p.jsonl": b'{"positive": "love", "neg": "hate"}\n'}, [], ["p.jsonl:1", "no field 'negative'"]),
    ("prompting without instruction", edit(GOOD, STEER, "method: prompting"), {}, [],
     ["steering.instruction", "Field required"]),
    ("unknown --method", GOOD, {}, ["--method", "mean_diff"],
     ["no steering for method 'mean_diff'", "it has: actadd", "methods:"]),
    ("bad --set", GOOD, {}, ["--set", "steering.layer"], ["bad --set", "FIELD.PATH=VALUE"]),
    ("--set wrong type", GOOD, {}, ["--set", "steering.layer=four"], ["steering.layer", "'four'"]),
]


@pytest.mark.parametrize("case", TASK_CASES, ids=[c[0] for c in TASK_CASES])
def test_bad_task_file_exits_2_with_a_precise_message(case, tmp_path, capsys):
    _, text, files, args, words = case
    for name, content in files.items():
        (tmp_path / name).write_bytes(content)
    task = tmp_path / "task.yaml"
    task.write_text(text)
    code = main(["run", str(task), "--out", str(tmp_path / "out"), "--model", "no/such-model", *args])
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.startswith("error: ") and "Traceback" not in err
    for word in words:
        assert word in err, f"{word!r} not in {err!r}"


OTHER_CASES = [
    ("unknown task name", ["run", "no_such_task"], ["no task named 'no_such_task'", "love_hate"]),
    ("task file missing", ["run", "missing.yaml"], ["task file not found", "missing.yaml"]),
    ("model not available", ["run", "love_hate", "--model", "nobody/nothing"],
     ["nobody/nothing", "network is not used"]),
    ("report of a missing run", ["report", "nowhere/run.json"], ["nowhere/run.json"]),
    ("check without baseline file", ["check", "RUN", "--baseline", "nowhere.json"], ["nowhere.json"]),
    ("unknown scorer on score", ["score", "SAMPLES", "--scorer", "nope"], ["unknown scorer 'nope'"]),
]


@pytest.mark.parametrize("case", OTHER_CASES, ids=[c[0] for c in OTHER_CASES])
def test_other_bad_input_exits_2(case, tmp_path, capsys, monkeypatch):
    _, args, words = case
    monkeypatch.chdir(tmp_path)
    (tmp_path / "RUN").mkdir()
    (tmp_path / "RUN" / "run.json").write_text(json.dumps({"schema_version": 1}))
    (tmp_path / "SAMPLES").write_text('{"completion": "hi"}\n')
    code = main(args)
    err = capsys.readouterr().err
    assert code == 2, err
    for word in words:
        assert word in err, f"{word!r} not in {err!r}"


def test_debug_flag_shows_the_traceback(tmp_path):
    with pytest.raises(UserError, match="no task named"):
        main(["--debug", "run", "no_such_task"])


def test_layer_out_of_range_names_the_layer_count(tiny_llama, tmp_path):
    from harness.runner import RunOptions, run

    task = tmp_path / "task.yaml"
    task.write_text(edit(GOOD, "layer: 1", "layer: 9"))
    with pytest.raises(UserError, match=re.escape("layer 9 is out of range: the model has 4 layers")):
        run(str(task), tmp_path / "out", model=tiny_llama, options=RunOptions(progress=False))


def _vectors(path: Path, value: object) -> None:
    if path.suffix == ".npy":
        import numpy as np

        np.save(path, value)
    elif path.suffix == ".pt":
        torch.save(value, path)
    else:
        path.write_bytes(value)


VECTOR_CASES = [  # (file name, content, key words); the tiny model has 4 layers of width 32
    ("wrong width", "v.pt", lambda: torch.zeros(4, 31), ["v.pt", "shape (31,)", "hidden size 32"]),
    ("wrong layer count", "v.npy", lambda: np.zeros((6, 32), dtype="float32"),
     ["v.npy", "holds 6 layer vectors", "has 4 layers"]),
    ("layer missing from mapping", "v.pt", lambda: {"0": torch.zeros(32), "3": torch.zeros(32)},
     ["v.pt", "no vector for layer 1", "0, 3"]),
    ("nan entries", "v.pt", lambda: torch.full((32,), float("nan")), ["v.pt", "NaN or inf"]),
    ("not a vector file", "v.safetensors", lambda: b"garbage", ["v.safetensors", "unknown layout"]),
    ("unknown content", "v.bin", lambda: b"x", ["v.bin", "not a GGUF, safetensors, NumPy or torch file"]),
]


@pytest.mark.parametrize("case", VECTOR_CASES, ids=[c[0] for c in VECTOR_CASES])
def test_bad_vector_file_names_the_file_and_the_mismatch(case, tiny_llama, tmp_path):
    from harness.runner import RunOptions, run

    _, name, make, words = case
    _vectors(tmp_path / name, make())
    task = tmp_path / "task.yaml"
    task.write_text(edit(GOOD, STEER, f"method: vector_file\n  path: {name}\n  layer: 1"))
    with pytest.raises(UserError) as err:
        run(str(task), tmp_path / "out", model=tiny_llama, options=RunOptions(progress=False))
    for word in words:
        assert word in str(err.value), f"{word!r} not in {err.value}"


def test_contrast_prompts_of_very_different_length_warn(tiny_llama):
    from harness.methods.actadd import Addition, ContrastLengthWarning, build_actadd

    with pytest.warns(ContrastLengthWarning, match="differ in token length"):
        build_actadd(tiny_llama, [Addition(1, 1.0, "love"),
                                  Addition(1, -1.0, "the water in the morning and the tower")])


yaml_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
fields = st.sampled_from(["name", "kind", "prompts", "steering", "scorers", "metrics", "headline",
                          "samples", "generation", "seed", "description"])


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(doc=st.dictionaries(fields, yaml_values, max_size=9) | yaml_values)
def test_arbitrary_yaml_only_ever_raises_user_error(doc, tmp_path):
    import yaml

    path = Path(tmp_path) / "fuzz.yaml"
    path.write_text(yaml.safe_dump(doc))
    with contextlib.suppress(UserError):
        load_task(str(path))
