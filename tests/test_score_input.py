"""`harness score` on a JSONL line whose completion is a lone UTF-16 surrogate escape ("\\ud800",
valid JSON but not Unicode): a user error naming the line (exit 2), not a serialisation traceback."""

from harness.cli import main


def test_lone_surrogate_in_a_completion_is_a_user_error_naming_the_line(tmp_path, capsys):
    path = tmp_path / "s.jsonl"
    path.write_text('{"prompt": "a", "completion": "I love it"}\n'
                    '{"prompt": "a", "completion": "\\ud800 broken"}\n', encoding="utf-8")
    code = main(["score", str(path), "--scorer", "keywords", "--params", '{"words": ["love"]}'])
    err = capsys.readouterr().err
    assert code == 2
    assert f"{path}:2: not valid Unicode" in err
