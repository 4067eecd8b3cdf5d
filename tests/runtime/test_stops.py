"""The one stop-string rule (runtime/stops.py), shared by generate (keep) and the server (strip)."""

import pytest

from estella.runtime.errors import SettingError
from estella.runtime.stops import StopMatcher, check_stops


def run(text, stops, keep):
    matcher = StopMatcher(stops, keep)
    finals = []
    for ch in text:
        stopped = matcher.push(ch)
        finals.append(matcher.final)
        if stopped:
            break
    else:
        matcher.end()
        finals.append(matcher.final)
    return matcher, finals


def test_keep_and_strip():
    kept, _ = run("abcXYZdef", ["XYZ"], keep=True)
    stripped, finals = run("abcXYZdef", ["XYZ"], keep=False)
    assert (kept.stop, kept.final, kept.length) == ("XYZ", 6, 6)
    assert (stripped.stop, stripped.final) == ("XYZ", 3)
    # "X" and "XY" might begin the stop string: held back, never published past the stop's start
    assert finals == [1, 2, 3, 3, 3, 3]


def test_a_partial_match_is_released_when_it_fails_and_at_the_end():
    m, finals = run("aXYbXY", ["XYZ"], keep=False)
    assert m.stop is None and finals == [1, 1, 1, 4, 4, 4, 6]  # the last value: after end()


def test_the_longest_held_prefix_over_several_stops():
    m, finals = run("q\n\n", ["\n\nTHE END", "\nZ"], keep=False)
    assert finals == [1, 1, 1, 3]


def test_check_stops():
    assert check_stops(None) == [] and check_stops("x") == ["x"] and check_stops(("a", "b")) == ["a", "b"]
    for bad in ("", ["a", ""], ["a", 3], 5):
        with pytest.raises(SettingError, match="^stop must be a non-empty string") as e:
            check_stops(bad)
        assert e.value.field == "stop"
