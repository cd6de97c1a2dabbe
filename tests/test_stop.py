"""Stopping: stop strings split over deltas never leak, end-of-generation tokens and max_tokens."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgelm.runtime.stop import FinishReason, StopChecker, StopStringFilter, eog_ban, normalize_stop


def run_filter(stop: list[str], chunks: list[str]) -> tuple[list[str], StopStringFilter]:
    """Emitted pieces, one per chunk (plus the final flush when no stop string matched)."""
    f = StopStringFilter(stop)
    out = [f.feed(c) for c in chunks]
    if not f.stopped:
        out.append(f.flush())
    return out, f


def reference(text: str, stops: list[str]) -> tuple[str, str | None]:
    """The text shown for `text` as a whole: cut before the stop string that completes first."""
    best: tuple[int, int, str] | None = None
    for s in stops:
        i = text.find(s)
        if i >= 0 and (best is None or (i + len(s), i) < best[:2]):
            best = (i + len(s), i, s)
    return (text, None) if best is None else (text[: best[1]], best[2])


def test_stop_string_split_over_tokens() -> None:
    out, f = run_filter(["###"], ["Hello", " wor", "ld#", "#", "#and more"])
    assert out == ["Hello", " wor", "ld", "", ""]
    assert f.stopped and f.matched == "###"
    assert f.feed("anything") == ""


def test_held_text_is_released_when_it_cannot_become_a_stop() -> None:
    f = StopStringFilter(["</s>", "\n\n"])
    assert f.feed("a <") == "a "
    assert f.pending == "<"
    assert f.feed("/") == ""
    assert f.feed("b>") == "</b>"
    assert f.feed("x\n") == "x"
    assert f.feed("y") == "\ny"
    assert f.feed("<") == ""
    assert f.flush() == "<"
    assert not f.stopped


def test_the_stop_string_completing_first_wins() -> None:
    # "b" completes before "abc": token by token or all at once, the text before "b" is shown
    assert run_filter(["abc", "b"], ["a", "b", "c"])[0] == ["", "a", ""]
    assert run_filter(["abc", "b"], ["abc"])[0] == ["a"]
    # same end: the one starting first (the longer) wins
    out, f = run_filter(["xyz", "yz"], ["wxyz"])
    assert out == ["w"] and f.matched == "xyz"


def test_unicode_stop_strings() -> None:
    out, f = run_filter(["。\n", "🙂🙃"], ["日本語", "です。", "\n次"])
    assert "".join(out) == "日本語です" and f.matched == "。\n"
    out, f = run_filter(["🙂🙃"], ["é🙂", "🙂", "🙃!"])
    assert "".join(out) == "é🙂" and f.stopped


def test_no_stop_strings_passes_text_through() -> None:
    f = StopStringFilter(None)
    assert f.feed("abc") == "abc" and f.flush() == ""


def test_normalize_stop() -> None:
    assert normalize_stop("x") == ("x",)
    assert normalize_stop(["a", "b", "a"]) == ("a", "b")
    assert normalize_stop(None) == ()
    for bad in ("", ["a", ""], [3]):
        with pytest.raises(ValueError, match=r"^stop="):
            normalize_stop(bad)  # type: ignore[arg-type]


ALPHABET = "ab#é🙂"


@st.composite
def split_text(draw: st.DrawFn) -> tuple[str, list[str], list[str]]:
    stops = draw(st.lists(st.text(ALPHABET, min_size=1, max_size=4), min_size=1, max_size=3))
    parts = draw(st.lists(st.text(ALPHABET, max_size=6), min_size=1, max_size=4))
    if draw(st.booleans()):  # put a stop string in somewhere
        parts.insert(draw(st.integers(0, len(parts))), draw(st.sampled_from(stops)))
    text = "".join(parts)
    cuts = sorted(draw(st.lists(st.integers(0, len(text)), max_size=12)))
    chunks = [text[i:j] for i, j in zip([0, *cuts], [*cuts, len(text)], strict=True)]
    return text, stops, chunks


@given(split_text())
@settings(max_examples=400, deadline=None)
def test_streamed_output_equals_the_text_before_the_stop(case: tuple[str, list[str], list[str]]) -> None:
    text, stops, chunks = case
    expected, matched = reference(text, stops)
    f = StopStringFilter(stops)
    shown, seen = "", ""
    for chunk in chunks:
        shown += f.feed(chunk)
        seen += chunk
        assert expected.startswith(shown)  # nothing shown is ever taken back: no partial stop leaks
        if f.stopped:
            break
        # held back only what can still become a stop string, and nothing more
        assert shown + f.pending == seen
        assert f.pending == "" or any(s.startswith(f.pending) and s != f.pending for s in stops)
        longer_tails = (seen[-n:] for n in range(len(f.pending) + 1, len(seen) + 1))
        assert not any(s.startswith(tail) for tail in longer_tails for s in stops)
    if not f.stopped:
        shown += f.flush()
    assert shown == expected
    assert f.matched == matched


# --- StopChecker -----------------------------------------------------------------------------------------


def test_eog_token_stops_and_releases_held_text() -> None:
    c = StopChecker(eog_ids={2, 7}, stop=["##"])
    assert c.accept(5, "ab#") == "ab"
    assert not c.done and c.is_eog(7) and not c.is_eog(5)
    assert c.accept(7) == "#"
    assert c.finish_reason is FinishReason.STOP and c.finish_reason == "stop"
    assert c.stop_token == 7 and c.stop_string is None and c.n_tokens == 2
    assert c.accept(5, "more") == ""


def test_stop_string_finishes_with_stop() -> None:
    c = StopChecker(stop="END", max_tokens=10)
    assert c.accept(1, "hello E") == "hello "
    assert c.accept(1, "ND and") == ""
    assert c.finish_reason is FinishReason.STOP and c.stop_string == "END"


def test_max_tokens_finishes_with_length() -> None:
    c = StopChecker(eog_ids=[0], stop=["xyz"], max_tokens=3)
    assert [c.accept(1, t) for t in ("a", "b", "cx")] == ["a", "b", "cx"]
    assert c.finish_reason is FinishReason.LENGTH and c.finish_reason == "length"
    # a stop string completing on the last allowed token wins over the length limit
    c = StopChecker(stop=["xyz"], max_tokens=2)
    assert c.accept(1, "ax") == "a"
    assert c.accept(1, "yz") == "" and c.finish_reason is FinishReason.STOP
    assert StopChecker(max_tokens=0).done
    assert StopChecker(max_tokens=None).finish_reason is None


def test_finish_from_outside() -> None:
    c = StopChecker(stop=["</answer>"])
    assert c.accept(1, "42</ans") == "42"
    assert c.finish() == "</ans" and c.finish_reason is FinishReason.LENGTH
    assert c.finish() == ""


@pytest.mark.parametrize("bad", [-1, 1.5, True, "10"])
def test_invalid_max_tokens_names_the_field(bad: object) -> None:
    with pytest.raises(ValueError, match=r"^max_tokens="):
        StopChecker(max_tokens=bad)  # type: ignore[arg-type]


def test_eog_ban_is_a_logit_bias() -> None:
    assert eog_ban({2, 5}) == {2: -math.inf, 5: -math.inf}
