"""The benchmarks' ratio to a floor: a figure whose floor was sampled right after each of
its runs is judged on the runs' own ratios, so a machine that slows down between the runs
and a separately timed floor cannot pass or fail it alone."""

from __future__ import annotations

from benchmarks._common import Figure, paired_note


def figure(samples: list[float], floors: list[float], *, paired: bool) -> Figure:
    floor = Figure(key="floor", label="floor", n=1, unit="s", samples=floors)
    return Figure(
        key="f",
        label="f",
        n=1,
        unit="s",
        samples=samples,
        ratio_target=2.0,
        floor=floor,
        paired=paired,
    )


def test_a_paired_ratio_is_the_median_of_each_run_over_its_own_floor() -> None:
    # The machine slowed down during the third run's floor and stayed slow.
    samples, floors = [1.0, 1.0, 1.0, 2.0, 2.0], [0.5, 0.5, 1.0, 1.0, 1.0]
    paired = figure(samples, floors, paired=True)
    assert paired.ratio == 2.0  # runs 2, 2, 1, 2, 2 times their own floors
    assert paired.ratio_of_medians == 1.0  # what the medians alone would have said
    assert "median over median: 1.00x" in paired_note(paired)
    alone = figure(samples, floors, paired=False)
    assert alone.ratio == 1.0
    assert paired_note(alone) == ""


def test_a_slow_floor_cannot_hide_slow_runs() -> None:
    # The runs are 2.4, 2.4, 2.0, 2.1 and 2.1 times the floors taken after them; the
    # medians alone (2.4 over 1.2) would say 2.0x.
    samples, floors = [2.4, 2.4, 2.4, 4.0, 4.0], [1.0, 1.0, 1.2, 1.9, 1.9]
    assert figure(samples, floors, paired=False).passed is True
    assert figure(samples, floors, paired=True).passed is False


def test_a_floor_with_missing_pairs_falls_back_to_the_medians() -> None:
    paired = figure([1.0, 2.0, 3.0], [1.0, 1.0], paired=True)
    assert paired.ratio == paired.ratio_of_medians == 2.0
