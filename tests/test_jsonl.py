"""gate.jsonl: the one JSONL reader (line numbers, '\\n' as the only line break, schema errors, gzip)."""

from __future__ import annotations

import gzip
import json

import pytest
from pydantic import BaseModel

from gate.errors import WaltzGateError
from gate.jsonl import JsonlError, iter_jsonl, parse_lines, parse_requests, read_jsonl


class Row(BaseModel):
    prompt: str
    n: int = 0


def test_rows_with_their_line_numbers_blank_lines_skipped(tmp_path):
    path = tmp_path / "a.jsonl"
    path.write_text('{"prompt": "a"}\n\n   \n{"prompt": "b", "n": 2}\r\n')
    assert list(iter_jsonl(path)) == [(1, {"prompt": "a"}), (4, {"prompt": "b", "n": 2})]
    assert read_jsonl(path, Row) == [Row(prompt="a"), Row(prompt="b", n=2)]


def test_unicode_line_separators_inside_a_string_do_not_break_the_line(tmp_path):
    text = "one\u2028two\u2029three\x85four\x0cfive"
    path = tmp_path / "u.jsonl"
    path.write_text(json.dumps({"prompt": text}, ensure_ascii=False) + "\n" + '{"prompt": "next"}\n', encoding="utf-8")
    assert list(iter_jsonl(path)) == [(1, {"prompt": text}), (2, {"prompt": "next"})]


@pytest.mark.parametrize("second,needle", [
    ("{not json", "a.jsonl line 3: not valid JSON"),
    ("[1, 2]", "a.jsonl line 3: expected a JSON object, not list"),
    ('{"prompt": 5}', "a.jsonl line 3: prompt: Input should be a valid string (got 5)"),
    ('{"n": 1}', "a.jsonl line 3: prompt: Field required"),
])
def test_a_bad_line_is_one_error_naming_file_and_line(tmp_path, second, needle):
    path = tmp_path / "a.jsonl"
    path.write_text('{"prompt": "ok"}\n\n' + second + "\n")
    with pytest.raises(JsonlError) as caught:
        read_jsonl(path, Row)
    assert needle in str(caught.value) and "\n" not in str(caught.value)
    assert isinstance(caught.value, WaltzGateError)


def test_unreadable_files_name_what_they_are(tmp_path):
    with pytest.raises(JsonlError, match=r"^cannot read data set .*missing.jsonl: No such file or directory$"):
        read_jsonl(tmp_path / "missing.jsonl", what="data set")
    binary = tmp_path / "b.jsonl"
    binary.write_bytes(b'{"prompt": "\xff\xfe"}\n')
    with pytest.raises(JsonlError, match=r"^data set .*b.jsonl is not UTF-8 text$"):
        read_jsonl(binary, what="data set")


def test_gzip_files_are_read_and_a_broken_one_is_an_error(tmp_path):
    path = tmp_path / "r.jsonl.gz"
    path.write_bytes(gzip.compress(b'{"prompt": "a\xe2\x80\xa8b"}\n{"prompt": "c"}\n'))
    assert read_jsonl(path) == [{"prompt": "a\u2028b"}, {"prompt": "c"}]
    path.write_bytes(gzip.compress(b'{"prompt": "a"}\n' * 1000)[:-20])
    with pytest.raises(JsonlError, match="is not a complete gzip file"):
        read_jsonl(path)
    path.write_bytes(b"plain text")
    with pytest.raises(JsonlError, match="is not a complete gzip file"):
        read_jsonl(path)


def test_parse_lines_numbers_from_where_a_tail_starts():
    assert list(parse_lines(['{"a": 1}', "", '{"a": 2}'], "m.jsonl", first=10)) == [(10, {"a": 1}), (12, {"a": 2})]
    with pytest.raises(JsonlError, match="m.jsonl line 11: not valid JSON"):
        list(parse_lines(['{"a": 1}', "{"], "m.jsonl", first=10))


def test_requests_as_lines_or_as_one_json_document():
    assert parse_requests('{"prompt": "a"}\n\n{"prompt": "b"}\n', "in", Row) == [Row(prompt="a"), Row(prompt="b")]
    assert parse_requests('{\n  "prompt": "a",\n  "n": 2\n}\n', "in", Row) == [Row(prompt="a", n=2)]
    assert parse_requests('[{"prompt": "a"},\n {"prompt": "b"}]', "in", Row) == [Row(prompt="a"), Row(prompt="b")]
    assert parse_requests("", "in", Row) == [] and parse_requests("[]", "in", Row) == []


@pytest.mark.parametrize(
    "text, message",
    [
        ('[{"prompt": "a"}, 5]', "in item 2: expected a JSON object, not int"),
        ('{\n "prompt": 5\n}', "in: prompt"),
        ('{"prompt": "a"}\n{"prompt": ', "in line 2: not valid JSON"),
        ('"just a string"', "in: expected a JSON object, not str"),
    ],
)
def test_bad_request_text_is_named(text, message):
    with pytest.raises(JsonlError, match=message):
        parse_requests(text, "in", Row)
