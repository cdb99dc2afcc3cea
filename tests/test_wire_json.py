"""The JSON fast path writes exactly what the general writer does."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from trioplane.wire._json import dump_json, dump_str_map


@given(st.dictionaries(st.text(), st.text(), max_size=8))
def test_str_map_fast_path_matches_dump_json(mapping: dict[str, str]) -> None:
    assert dump_str_map(mapping) == dump_json(mapping)


def test_str_map_refuses_non_str() -> None:
    with pytest.raises(TypeError, match="must be str"):
        dump_str_map({"k": 1})  # type: ignore[dict-item]
