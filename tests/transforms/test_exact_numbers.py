"""Numbers in the legacy JSON reach the target exactly: Polars' JSON path matcher is not
correctly rounded (``194.24099393827458`` came back one unit in the last place off, and a
frequency of ``99999.99999999999`` as ``100000.0``), so values are read from the exact text."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from tests.transforms.factories import element, legacy, make_profile, make_session, make_user
from transforms import jsontext
from transforms.impedance import PARAMETERS
from transforms.pipeline import transform

# Values Polars' path matcher rounded wrongly (seen on the benchmark's data).
SEEN = {
    "Rsh": 194.24099393827458,
    "Ra": 1988.3602644229206,
    "Ca": 4.6340099589482344e-07,
    "Rb": 97.39710537150297,
    "Cb": 1.6961504265326926e-07,
}
positive = st.floats(min_value=1e-300, max_value=1e300, allow_nan=False, allow_infinity=False)
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)


def stored(result: Any) -> dict[str, Any]:
    configs = result.circuit_configurations
    assert configs.height == 1, result.quarantine
    row = configs.row(0, named=True)
    return {**json.loads(row["circuit_parameters"]), "min": row["min_freq"], "max": row["max_freq"]}


def test_an_elements_numbers_are_stored_exactly() -> None:
    user = make_user()
    freq = (0.10000000000000002, 99999.99999999999)
    session = make_session(user["id"], saved=[element(params=SEEN, freq=freq)])
    got = stored(transform(**legacy(users=[user], sessions=[session])))
    assert {k: got[k] for k in PARAMETERS} == SEEN
    assert (got["min"], got["max"]) == freq


@settings(max_examples=60, deadline=None)
@given(st.fixed_dictionaries({k: positive for k in PARAMETERS}), st.booleans())
def test_numbers_are_stored_exactly_on_every_path(params: dict[str, float], nested: bool) -> None:
    """Flat parameters take the decoder's fast path, nested ones (an extra object) the slow one;
    elements and legacy profiles alike."""
    written = {**params, **({"extra": {"deep": [1.5]}} if nested else {})}
    user = make_user()
    session = make_session(user["id"], saved=[element(params=written)])
    got = stored(transform(**legacy(users=[user], sessions=[session])))
    assert {k: got[k] for k in PARAMETERS} == params
    profile = make_profile(user["id"], params=written)
    got = stored(transform(**legacy(users=[user], profiles=[profile])))
    assert {k: got[k] for k in PARAMETERS} == params


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.text(), json_values, max_size=6), st.sampled_from([None, 2, 0]))
def test_members_and_items_are_exact_slices(value: dict[str, Any], indent: int | None) -> None:
    text = json.dumps(value, indent=indent)
    found = jsontext.members(text)
    assert found is not None and found.keys() == value.keys()
    for key, piece in found.items():
        assert json.loads(piece) == value[key] and piece in text
    array = json.dumps(list(value.values()), indent=indent)
    pieces = jsontext.items(array)
    assert pieces is not None and [json.loads(p) for p in pieces] == list(value.values())


@given(st.text(max_size=30))
def test_anything_else_reads_as_none_never_raises(text: str) -> None:
    try:
        parsed = json.loads(text)
    except ValueError:
        parsed = None
    assert (jsontext.members(text) is not None) == isinstance(parsed, dict)
    assert (jsontext.items(text) is not None) == isinstance(parsed, list)


def test_path_reads_like_the_path_matcher() -> None:
    text = '{"a": "x\\"y", "b": {"c": 1.5}, "d": [1, 2.50], "e": null, "f": 99999.99999999999}'
    assert jsontext.path(text, "a") == 'x"y'
    assert jsontext.path(text, "b") == '{"c": 1.5}'
    assert jsontext.path(text, "d", 1) == "2.50"
    assert jsontext.path(text, "e") is None and jsontext.path(text, "zz") is None
    assert jsontext.path(text, "d", 9) is None and jsontext.path("not json", "a") is None
    assert jsontext.path(text, "f") == "99999.99999999999"
