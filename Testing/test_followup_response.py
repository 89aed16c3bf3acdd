"""Nodal response (followup/response.py): RECIST 1.1 and Lugano 2014 known answers, thresholds, target choice."""

from __future__ import annotations

import json

import numpy as np
import pytest

from LymphNodeQuantLib.errors import InputError
from LymphNodeQuantLib.followup import LesionDiameters, TrackedNode, assess_response, select_target_nodes
from LymphNodeQuantLib.geometry import ImageGeometry, Volume
from LymphNodeQuantLib.measure import measure_nodes

D = LesionDiameters


def _node(node_id, baseline_short, followup_short, *, nadir_short=None, extra_mm=4.0):
    """A RECIST node: short axes given (None = absent / not found), long axis ``extra_mm`` longer."""

    def diameters(short):
        return None if short is None else D(short, short + extra_mm)

    return TrackedNode(node_id, diameters(baseline_short), diameters(followup_short), diameters(nadir_short))


def _recist(nodes, **options):
    return assess_response(nodes, "recist", **options)


def _lugano(nodes, **options):
    return assess_response(nodes, "lugano", **options)


# ------------------------------------------------------------------------------------ RECIST 1.1


@pytest.mark.parametrize(
    "followup, expected",
    [
        ((9.9, 5.0), "CR"),  # every target < 10 mm: CR although the sum is 14.9 mm
        ((14.0, 14.0), "PR"),  # 40 -> 28 mm: -30 %
        ((18.0, 18.0), "SD"),
        ((24.0, 24.0), "PD"),  # +20 % and +8 mm over the nadir (= baseline)
    ],
)
def test_recist_target_categories(followup, expected):
    result = _recist([_node(1, 20.0, followup[0]), _node(2, 20.0, followup[1])])
    assert result.criteria == "RECIST 1.1"
    assert result.target_response == expected and result.overall_response == expected
    assert result.baseline_sum_mm == pytest.approx(40.0)
    assert result.followup_sum_mm == pytest.approx(sum(followup))


def test_recist_exactly_30_percent_decrease_is_pr_and_29_9_percent_is_sd():
    # 31.0 -> 21.7 mm is exactly -30 %, but in floating point the change is -0.29999999999999993
    assert ((10.8 + 10.9) - (15.0 + 16.0)) / (15.0 + 16.0) > -0.3
    exact = _recist([_node(1, 15.0, 10.8), _node(2, 16.0, 10.9)])
    assert exact.overall_response == "PR"
    assert exact.change_from_baseline == pytest.approx(-0.30)
    short_of_it = _recist([_node(1, 20.0, 14.02), _node(2, 20.0, 14.02)])  # 40 -> 28.04 mm: -29.9 %
    assert short_of_it.overall_response == "SD"


def test_recist_pd_needs_20_percent_and_5_mm_over_the_nadir():
    def assess(followup):
        return _recist([_node(i, 16.0, f, nadir_short=10.0) for i, f in ((1, followup), (2, followup))])

    four_mm = assess(12.0)  # nadir 20 mm -> 24 mm: +20 % but only +4 mm
    assert four_mm.overall_response == "SD" and four_mm.nadir_sum_mm == pytest.approx(20.0)
    assert four_mm.change_from_nadir == pytest.approx(0.20)
    assert assess(12.5).overall_response == "PD"  # +25 %, +5 mm
    # exactly +5.0 mm, which is 4.999999999999998 in floating point; +48.5 %
    assert (5.1 + 10.2) - (5.0 + 5.3) < 5.0
    tight = _recist([_node(1, 16.0, 5.1, nadir_short=5.0), _node(2, 17.0, 10.2, nadir_short=5.3)])
    assert tight.overall_response == "PD" and tight.sum_change_from_nadir_mm == pytest.approx(5.0)


def test_recist_pd_is_measured_from_the_nadir_not_the_baseline():
    # baseline 50 mm, nadir 30 mm, follow-up 36 mm: -28 % from baseline (no PR), +20 % and +6 mm from nadir: PD
    result = _recist([_node(1, 25.0, 18.0, nadir_short=15.0), _node(2, 25.0, 18.0, nadir_short=15.0)])
    assert result.overall_response == "PD"
    assert (result.baseline_sum_mm, result.nadir_sum_mm, result.followup_sum_mm) == pytest.approx((50.0, 30.0, 36.0))
    # PD wins over PR: -50 % from baseline, but +25 % and +10 mm from the nadir
    assert _recist([_node(1, 50.0, 25.0, nadir_short=20.0), _node(2, 50.0, 25.0, nadir_short=20.0)]).overall_response == "PD"
    # without a nadir examination the baseline is the nadir: 40 -> 36 mm is SD
    assert _recist([_node(1, 25.0, 18.0), _node(2, 25.0, 18.0)]).overall_response == "SD"
    # a nadir examination larger than the baseline: the baseline stays the smallest sum on study
    larger = _recist([_node(1, 20.0, 24.0, nadir_short=22.0), _node(2, 20.0, 24.0, nadir_short=22.0)])
    assert larger.nadir_sum_mm == pytest.approx(40.0) and larger.overall_response == "PD"


def test_recist_nadir_must_cover_every_target_or_none():
    with pytest.raises(InputError, match="nadir measurement"):
        _recist([_node(1, 25.0, 18.0, nadir_short=15.0), _node(2, 25.0, 18.0)])


def test_recist_node_shrinking_to_9_9_mm_counts_toward_cr_and_10_mm_does_not():
    cr = _recist([_node(1, 20.0, 9.9), _node(2, 18.0, 9.9)])
    assert cr.overall_response == "CR" and cr.followup_sum_mm == pytest.approx(19.8)  # CR with a non-zero sum
    assert _recist([_node(1, 20.0, 9.9), _node(2, 18.0, 10.0)]).overall_response == "PR"  # -47 %
    # a non-target node still at 10.0 mm turns target CR into overall PR (RECIST 1.1 Table 4)
    with_non_target = _recist([_node(1, 20.0, 5.0), _node(2, 12.0, 10.0)])
    assert with_non_target.target_response == "CR" and with_non_target.non_target_response == "non-CR/non-PD"
    assert with_non_target.overall_response == "PR"
    assert _recist([_node(1, 20.0, 5.0), _node(2, 12.0, 9.9)]).overall_response == "CR"


def test_recist_growth_of_target_nodes_below_10_mm_is_not_progression():
    # nadir 8 mm -> 14 mm (+75 %, +6 mm), but both nodes stay < 10 mm: normal nodes, target CR
    result = _recist([_node(1, 20.0, 7.0, nadir_short=4.0), _node(2, 20.0, 7.0, nadir_short=4.0)])
    assert result.target_response == "CR" and result.overall_response == "CR"


def test_recist_new_node_at_10_mm_is_pd_and_at_9_9_mm_is_not():
    target = _node(1, 20.0, 14.0)  # -30 %: PR on its own
    assert _recist([target, _node(2, None, 9.9)]).overall_response == "PR"
    new = _recist([target, _node(2, None, 10.0)])
    assert new.overall_response == "PD" and new.new_node_ids == [2]
    assert new.per_node[2]["role"] == "new" and new.per_node[2]["needs_confirmation"]  # 10-15 mm: confirm next time
    assert not _recist([target, _node(2, None, 15.0)]).per_node[2]["needs_confirmation"]
    grown = _recist([target, _node(2, 8.0, 10.0)])  # normal at baseline, pathological now: a new lesion
    assert grown.overall_response == "PD" and grown.new_node_ids == [2]
    assert _recist([target, _node(2, 8.0, 9.9)]).per_node[2]["role"] == "normal"


def test_recist_selects_at_most_two_measurable_nodes_by_short_axis():
    nodes = [_node(1, 16.0, 16.0), _node(2, 20.0, 20.0), _node(3, 14.9, 14.9), _node(4, 15.0, 15.0), _node(5, 18.0, 18.0)]
    assert select_target_nodes(nodes, "recist") == [2, 5]
    result = _recist(nodes)
    assert result.target_node_ids == [2, 5] and result.non_target_node_ids == [1, 3, 4]
    assert result.target_selection == "automatic"
    tied = [TrackedNode(1, D(18.0, 20.0), None), TrackedNode(2, D(18.0, 25.0), None), TrackedNode(3, D(18.0, 20.0), None)]
    assert select_target_nodes(tied, "recist") == [2, 1]  # longer long axis, then lower id
    assert select_target_nodes([_node(1, 14.9, 20.0), _node(2, 15.0, 20.0)], "recist") == [2]  # >= 15 mm is measurable


def test_recist_without_measurable_node_assesses_non_targets_only():
    nodes = [_node(1, 12.0, 11.0), _node(2, 14.9, 9.0)]
    result = _recist(nodes)
    assert result.target_node_ids == [] and result.target_response is None and result.baseline_sum_mm is None
    assert result.overall_response == "non-CR/non-PD"
    assert _recist([_node(1, 12.0, 9.9), _node(2, 14.9, 9.0)]).overall_response == "CR"
    assert _recist([*nodes, _node(3, None, 11.0)]).overall_response == "PD"
    assert _recist(nodes, non_target_progression=True).overall_response == "PD"


def test_recist_without_pathological_node_is_not_evaluable_unless_a_node_appears():
    assert _recist([_node(1, 9.9, 9.0)]).overall_response == "NE"
    assert _recist([_node(1, 9.9, 9.0), _node(2, None, 12.0)]).overall_response == "PD"


def test_recist_disappeared_target_counts_as_0_mm():
    result = _recist([_node(1, 20.0, None), _node(2, 20.0, 14.0)])  # 40 -> 0 + 14 mm: -65 %
    assert result.followup_sum_mm == pytest.approx(14.0) and result.overall_response == "PR"
    assert result.per_node[1]["found_at_followup"] is False and result.per_node[1]["followup_short_axis_mm"] == 0.0
    assert _recist([_node(1, 20.0, None), _node(2, 20.0, None)]).overall_response == "CR"


def test_recist_non_target_progression_is_the_readers_judgement():
    nodes = [_node(1, 20.0, 19.0), _node(2, 12.0, 14.0)]
    assert _recist(nodes).overall_response == "SD"
    flagged = _recist(nodes, non_target_progression=True)
    assert flagged.non_target_response == "PD" and flagged.overall_response == "PD"


# ----------------------------------------------------------------------------------- Lugano 2014


def _lugano_pair(first, second):
    """Two target nodes (30 x 20 and 25 x 18 mm at baseline: SPD 1050 mm2) with the given follow-up (LDi, SDi)."""
    return [TrackedNode(1, D(20.0, 30.0), D(first[1], first[0])), TrackedNode(2, D(18.0, 25.0), D(second[1], second[0]))]


@pytest.mark.parametrize(
    "first, second, expected",
    [
        ((15.0, 10.0), (12.0, 8.0), "CR"),  # every LDi <= 15 mm
        ((15.1, 10.0), (12.0, 8.0), "PR"),  # LDi 15.1 mm is still abnormal; SPD -76 %
        ((20.0, 15.0), (22.5, 10.0), "PR"),  # SPD 300 + 225 = 525 mm2: exactly -50 %
        ((20.0, 15.0), (22.6, 10.0), "SD"),  # 526 mm2: -49.9 %
        ((30.0, 20.0), (25.0, 18.0), "SD"),
        ((40.0, 25.0), (25.0, 18.0), "PD"),  # node 1: PPD +67 %, LDi +10 mm (> 20 mm node), LDi > 15 mm
    ],
)
def test_lugano_categories(first, second, expected):
    result = _lugano(_lugano_pair(first, second))
    assert result.criteria == "Lugano 2014" and result.overall_response == expected
    assert result.baseline_spd_mm2 == pytest.approx(1050.0)
    assert result.followup_spd_mm2 == pytest.approx(first[0] * first[1] + second[0] * second[1])


@pytest.mark.parametrize(
    "nadir, followup, progresses",
    [
        ((18.0, 12.0), (23.0, 14.1), True),  # node <= 20 mm: +5.0 mm LDi, PPD 216 -> 324.3 (+50.1 %)
        ((18.0, 12.0), (22.9, 14.2), False),  # +4.9 mm only (PPD +50.5 %)
        ((20.0, 10.0), (26.0, 12.0), True),  # 20.0 mm is "<= 2 cm": 5 mm suffices
        ((20.1, 10.0), (26.1, 12.0), False),  # 20.1 mm is "> 2 cm": +6 mm < 10 mm
        ((20.1, 10.0), (30.1, 12.0), True),  # +10.0 mm
        ((20.0, 10.0), (30.0, 10.0), True),  # PPD exactly +50 %
        ((20.0, 10.0), (29.9, 10.0), False),  # PPD +49.5 %
        ((8.0, 6.0), (15.0, 8.0), False),  # PPD +150 %, +7 mm, but LDi 15.0 mm is not abnormal
        ((8.0, 6.0), (15.1, 8.0), True),  # LDi 15.1 mm > 1.5 cm
        ((16.0, 8.0), (18.0, 14.0), True),  # SDi +6 mm counts (LDi only +2 mm)
    ],
)
def test_lugano_per_node_progression_thresholds(nadir, followup, progresses):
    stable_target = TrackedNode(1, D(30.0, 40.0), D(30.0, 40.0))
    node = TrackedNode(2, D(nadir[1], nadir[0]), D(followup[1], followup[0]))
    result = _lugano([stable_target, node])
    assert result.per_node[2]["progression"] is progresses
    assert result.overall_response == ("PD" if progresses else "SD")


def test_lugano_per_node_progression_is_measured_from_the_nodes_nadir():
    # baseline 30 x 20, nadir 16 x 10, follow-up 22 x 14: -49 % from baseline, but +93 % PPD and +6 mm from its nadir
    node = TrackedNode(1, D(20.0, 30.0), D(14.0, 22.0), nadir=D(10.0, 16.0))
    result = _lugano([node])
    assert result.per_node[1]["progression"] and result.overall_response == "PD"
    assert result.per_node[1]["diameter_increase_threshold_mm"] == 5.0  # 16 mm at nadir: a node <= 2 cm
    assert _lugano([TrackedNode(1, D(20.0, 30.0), D(14.0, 22.0))]).overall_response == "SD"  # no nadir given


def test_lugano_new_node_over_15_mm_is_pd():
    target = TrackedNode(1, D(20.0, 30.0), D(20.0, 30.0))
    assert _lugano([target, TrackedNode(2, None, D(10.0, 15.0))]).overall_response == "SD"
    result = _lugano([target, TrackedNode(2, None, D(10.0, 15.1))])
    assert result.overall_response == "PD" and result.new_node_ids == [2]


def test_lugano_non_measured_node_over_15_mm_prevents_cr():
    nodes = [TrackedNode(1, D(20.0, 30.0), D(8.0, 12.0)), TrackedNode(2, D(9.0, 16.0), D(9.0, 16.0))]
    result = _lugano(nodes, target_node_ids=[1])
    assert result.non_target_node_ids == [2] and result.overall_response == "PR"
    assert _lugano([nodes[0], TrackedNode(2, D(9.0, 16.0), D(9.0, 15.0))], target_node_ids=[1]).overall_response == "CR"


def test_lugano_selects_at_most_six_measurable_nodes_by_ppd():
    nodes = [TrackedNode(i, D(10.0 + i, 16.0 + i), None) for i in range(1, 8)]  # 7 measurable nodes
    nodes.append(TrackedNode(8, D(15.0, 15.0), None))  # LDi 15.0 mm: not measurable
    assert select_target_nodes(nodes, "lugano") == [7, 6, 5, 4, 3, 2]
    long_and_thin = [TrackedNode(1, D(5.0, 30.0), None), TrackedNode(2, D(20.0, 25.0), None)]
    assert select_target_nodes(long_and_thin, "lugano") == [2, 1]  # largest by PPD (500 > 150 mm2), not by LDi
    result = _lugano(nodes)
    assert result.target_node_ids == [2, 3, 4, 5, 6, 7] and result.non_target_node_ids == [1]
    assert result.overall_response == "CR"  # every node gone: 0 x 0 mm
    assert result.followup_spd_mm2 == 0.0
    with pytest.raises(InputError, match="at most 6 target nodes"):
        _lugano(nodes, target_node_ids=[1, 2, 3, 4, 5, 6, 7])


def test_lugano_without_measurable_node_is_not_evaluable_unless_it_progresses():
    assert _lugano([TrackedNode(1, D(10.0, 15.0), D(10.0, 15.0))]).overall_response == "NE"
    assert _lugano([TrackedNode(1, D(10.0, 15.0), D(10.0, 15.0))], non_target_progression=True).overall_response == "PD"


# --------------------------------------------------------------------------------- user override


def test_user_targets_replace_the_automatic_selection():
    nodes = [_node(1, 20.0, 20.0), _node(2, 18.0, 18.0), _node(3, 16.0, 11.0)]
    automatic = _recist(nodes)
    assert automatic.target_node_ids == [1, 2] and automatic.overall_response == "SD"
    chosen = _recist(nodes, target_node_ids=[3])  # 16 -> 11 mm: -31 %, nodes 1 and 2 become non-targets
    assert chosen.target_node_ids == [3] and chosen.non_target_node_ids == [1, 2]
    assert chosen.target_selection == "user" and chosen.overall_response == "PR"


@pytest.mark.parametrize(
    "criteria, ids, message",
    [
        ("recist", [9], r"\[9\] are not among the tracked nodes"),
        ("recist", [1, 2, 3], "at most 2 target nodes"),
        ("recist", [1, 1], "repeat a node"),
        ("recist", [4], "Node 4 is not measurable by RECIST 1.1"),
        ("recist", [5], "new at follow-up"),
        ("recist", [], "empty"),
        ("recist", [1.5], "whole numbers"),
        ("lugano", [4], "Node 4 is not measurable by Lugano 2014"),
    ],
)
def test_user_targets_are_checked(criteria, ids, message):
    nodes = [_node(1, 20.0, 20.0), _node(2, 18.0, 18.0), _node(3, 16.0, 11.0), _node(4, 14.9, 12.0, extra_mm=0.1)]
    nodes.append(_node(5, None, 20.0))
    with pytest.raises(InputError, match=message):
        assess_response(nodes, criteria, target_node_ids=ids)


# ------------------------------------------------------------------------------ inputs and output


def test_bad_inputs_are_refused_with_a_clear_message():
    with pytest.raises(InputError, match="neither a baseline nor a follow-up"):
        TrackedNode(1, None, None)
    with pytest.raises(InputError, match="appears twice"):
        _recist([_node(1, 20.0, 20.0), _node(1, 18.0, 18.0)])
    with pytest.raises(InputError, match="Unknown response criteria"):
        assess_response([_node(1, 20.0, 20.0)], "who")
    with pytest.raises(InputError, match="finite number"):
        D(float("nan"), 10.0)
    with pytest.raises(InputError, match="longer than its long axis"):
        D(12.0, 10.0)


def test_criteria_names_and_json_output():
    nodes = [_node(1, 20.0, 14.0), _node(2, 12.0, None), _node(3, None, 11.0)]
    assert assess_response(nodes, "RECIST 1.1").overall_response == assess_response(nodes, "recist").overall_response
    for criteria in ("recist", "Lugano 2014"):
        document = json.loads(json.dumps(assess_response(nodes, criteria).as_dict(), allow_nan=False))
        assert set(document["per_node"]) == {"1", "2", "3"}
        assert document["reasons"] and document["sources"] and document["not_assessed"]
    assert D(12.0, 20.0).perpendicular_product_mm2 == 240.0


def test_response_from_measured_nodes():
    """Measured spheres (measure.py) feed the response: 20 mm -> 12 mm short axis is a RECIST PR and a Lugano CR."""
    shape = (30, 40, 40)
    geometry = ImageGeometry(shape, (1.0, 1.0, 1.0))
    grid = np.stack(np.meshgrid(*(np.arange(n) for n in shape), indexing="ij"))

    def measured(radius_mm):
        mask = (((grid - 19.5) ** 2).sum(axis=0) <= radius_mm**2).astype(np.uint8)
        (node,) = measure_nodes(Volume(mask, geometry))
        return LesionDiameters.from_measurement(node), node

    baseline, before = measured(10.0)
    followup, after = measured(6.0)
    assert before.perpendicular_product_mm2 == pytest.approx(baseline.perpendicular_product_mm2, abs=1e-5)
    result = assess_response([TrackedNode(1, baseline, followup)], "recist")
    assert result.target_node_ids == [1] and result.overall_response == "PR"
    assert after.short_axis_mm == pytest.approx(12.0, abs=1.0)
    assert assess_response([TrackedNode(1, baseline, followup)], "lugano").overall_response == "CR"
