import math
from dataclasses import replace

import numpy as np
import pytest

from alcsp.dedup import Deduplicator
from alcsp.select import (
    Candidate,
    SelectionConfig,
    SelectionSchedule,
    cap_selection,
    search_should_stop,
    select_for_labelling,
)


def _fp(seed):
    v = np.random.default_rng(seed).random(60).astype(np.float32) ** 4
    return v / np.linalg.norm(v)


def _data():
    # composition -> E_hull of its best structure: A 0.00, B 0.02, C 0.05, D 0.10
    return [
        Candidate("a1", "A", -1.000, 0.000, "converged", _fp(1)),
        Candidate("a3", "A", -0.999, 0.001, "converged", _fp(1)),  # duplicate of a1
        Candidate("a2", "A", -0.990, 0.010, "converged", _fp(2)),
        Candidate("a4", "A", -0.900, 0.100, "converged", _fp(3)),
        Candidate("b1", "B", -0.800, 0.020, "converged", _fp(4)),
        Candidate("b2", "B", -0.790, 0.030, "converged", _fp(5)),
        Candidate("b3", "B", -0.700, 0.120, "converged", _fp(6)),
        Candidate("c1", "C", -0.500, 0.050, "converged", _fp(7)),
        Candidate("d1", "D", -0.300, 0.100, "converged", _fp(8)),
        Candidate("u1", "D", -2.000, math.nan, "unphysical", _fp(9)),
        Candidate("m1", "C", -0.400, 0.150, "max_steps", _fp(10)),
    ]


def test_composition_wise_rule():
    sel = select_for_labelling(_data(), SelectionConfig(c_max=2, l_max=2, b_max=10))
    assert sel.compositions == ("A", "B")
    assert [c.id for c in sel.minima] == ["a1", "a2", "b1", "b2"]  # a3 is a duplicate of a1
    assert [c.id for c in sel.failures] == ["m1", "u1"]
    assert sel.ids == ["a1", "a2", "b1", "b2", "m1", "u1"]
    assert sel.n_excluded_duplicates == 1


def test_labelled_ids_and_labelled_duplicates_are_excluded():
    labelled = Deduplicator()
    labelled.add("old", "A", -0.9901, _fp(2))  # a2 duplicates a labelled structure
    sel = select_for_labelling(
        _data(), SelectionConfig(c_max=2, l_max=2), labelled_ids={"b1", "u1"}, labelled=labelled
    )
    assert [c.id for c in sel.minima] == ["a1", "a4", "b2", "b3"]
    assert [c.id for c in sel.failures] == ["m1"]
    assert sel.n_excluded_labelled == 3


def test_composition_with_nothing_left_does_not_take_a_slot():
    sel = select_for_labelling(
        _data(), SelectionConfig(c_max=2, l_max=1), labelled_ids={"a1", "a2", "a3", "a4"}
    )
    assert sel.compositions == ("B", "C")
    assert [c.id for c in sel.minima] == ["b1", "c1"]


def test_failures_can_be_left_out_and_zero_sizes():
    cfg = SelectionConfig(c_max=0, l_max=3, include_unconverged=False)
    sel = select_for_labelling(_data(), cfg)
    assert sel.minima == () and [c.id for c in sel.failures] == ["u1"]


def test_schedule_paper_be_p_n_o():
    early, late = SelectionConfig(c_max=270, l_max=2), SelectionConfig(c_max=95, l_max=4)
    s = SelectionSchedule({0: early, 5: late})
    assert [s.for_iteration(i).c_max for i in (0, 4, 5, 28)] == [270, 270, 95, 95]
    s2 = SelectionSchedule.from_list([early, late])
    assert s2.for_iteration(0) is early and s2.for_iteration(7) is late
    with pytest.raises(ValueError, match="iteration 0"):
        SelectionSchedule({1: early})


def test_search_should_stop():
    assert not search_should_stop(10, 10)
    assert search_should_stop(11, 10)


def test_bad_input():
    with pytest.raises(ValueError, match="unknown status"):
        Candidate("x", "A", 0.0, 0.0, "done")
    with pytest.raises(ValueError, match="finite"):
        Candidate("x", "A", 0.0, math.nan, "converged")
    with pytest.raises(ValueError, match="c_max"):
        SelectionConfig(c_max=-1)
    with pytest.raises(ValueError, match="twice"):
        select_for_labelling([_data()[0], _data()[0]], SelectionConfig())
    with pytest.raises(ValueError, match="no fingerprint"):
        select_for_labelling(
            [Candidate("x", "A", 0.0, 0.0, "converged")], SelectionConfig(), labelled=Deduplicator()
        )


def test_committee_rule_ranks_by_a_lower_confidence_bound():
    # B's best is 20 meV/atom above A's but the committee is unsure of b2 by 50 meV/atom:
    # with kappa = 1 its bound (0.03 - 0.05 = -0.02) puts B first and b2 before b1.
    data = [replace(c, spread=0.05) if c.id == "b2" else c for c in _data()]
    paper = select_for_labelling(data, SelectionConfig(c_max=1, l_max=1))
    assert paper.ids[:1] == ["a1"]
    lcb = select_for_labelling(data, SelectionConfig(c_max=1, l_max=1, rule="committee"))
    assert lcb.compositions == ("B",) and lcb.minima[0].id == "b2"
    # exploit = 1: the model's best guess of the composition comes first, then the bound's
    greedy = dict(c_max=1, rule="committee", exploit=1)
    mixed = select_for_labelling(data, SelectionConfig(l_max=2, **greedy))
    assert [c.id for c in mixed.minima] == ["b1", "b2"]
    one = select_for_labelling(data, SelectionConfig(l_max=1, **greedy))
    assert [c.id for c in one.minima] == ["b1"]
    # a duplicate of the greedy pick is skipped by the bound's pass too
    dup = [*data, Candidate("b0", "B", -0.799, 0.021, "converged", _fp(4), spread=0.2)]
    both = select_for_labelling(dup, SelectionConfig(l_max=2, **greedy))
    assert [c.id for c in both.minima] == ["b1", "b2"] and both.n_excluded_duplicates == 1
    # kappa = 0 is the paper's ranking again
    zero = select_for_labelling(
        data, SelectionConfig(c_max=1, l_max=1, rule="committee", kappa=0.0)
    )
    assert zero.ids == paper.ids


def test_cap_selection_limits_failures_and_takes_minima_round_robin():
    sel = select_for_labelling(_data(), SelectionConfig(c_max=3, l_max=2))
    assert [c.id for c in sel.minima] == ["a1", "a2", "b1", "b2", "c1"]
    capped = cap_selection(sel, 4, failure_share=0.25)
    assert [c.id for c in capped.failures] == ["m1"]  # 0.25 x 4 = 1 failure
    # three minima, round robin over A, B, C (each composition's best first)
    assert sorted(c.id for c in capped.minima) == ["a1", "b1", "c1"]
    assert len(capped.ids) == 4
    assert cap_selection(sel, None, 0.5) is sel
    assert cap_selection(sel, 100, 1.0) is sel
    none_failing = cap_selection(sel, 3, failure_share=0.0)
    assert none_failing.failures == () and len(none_failing.minima) == 3
    # failures stay within their share even when minima leave room
    few = select_for_labelling(_data(), SelectionConfig(c_max=1, l_max=1))
    assert [c.id for c in cap_selection(few, 10, 0.1).failures] == ["m1"]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"rule": "best"}, "rule must be one of"),
        ({"kappa": -1.0}, "kappa must be a finite number >= 0"),
        ({"exploit": -1}, "exploit must be an integer >= 0"),
        ({"force_deviation": 0.0}, "force_deviation must be > 0"),
        ({"force_deviation": math.nan}, "force_deviation must be a finite number"),
    ],
)
def test_bad_committee_selection_settings(kwargs, message):
    with pytest.raises(ValueError, match=message):
        SelectionConfig(**kwargs)
