"""docs/API.md, the Control API reference, is generated from control.proto (`docs.gen_api`):
these tests fail when the proto changed and the reference was not regenerated, or when an RPC,
a field or an enum value has no comment to render."""
from __future__ import annotations

import pytest

from docs import gen_api


@pytest.fixture(scope="module")
def control():
    return gen_api.descriptor()


def test_the_api_reference_is_current(control) -> None:
    text = gen_api.render(control)
    assert gen_api.OUTPUT.exists() and gen_api.OUTPUT.read_text() == text, (
        f"docs/API.md is stale: run {gen_api.REGENERATE}")


def test_every_rpc_field_and_enum_value_is_commented(control) -> None:
    assert gen_api.missing_comments(control) == [], "comment these in proto/roost/v1/control.proto"


def test_the_reference_shows_types_paging_and_errors(control) -> None:
    text = gen_api.render(control)
    assert "### rpc ListExecutions" in text and "### ListExecutionsRequest" in text
    assert "| `create_time` | 36 | [google.protobuf.Timestamp](" in text
    assert "| `page_token` |" in text and "next_page_token" in text
    assert "Reserved (fields of earlier versions): " in text and "`created_at`" in text
    assert "NOT_FOUND" in text


def test_the_check_mode_reports_a_stale_file(tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.setattr(gen_api, "OUTPUT", tmp_path / "API.md")
    assert gen_api.main(["--check"]) == 1
    assert "docs/API.md is stale" in capsys.readouterr().err
    assert gen_api.main([]) == 0 and gen_api.main(["--check"]) == 0
