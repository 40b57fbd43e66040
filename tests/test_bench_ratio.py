"""The benchmarks' ratio to a floor: a figure whose floor was timed right after each of
its runs is judged on the runs' own ratios, so a machine that slows down between the runs
and a floor timed apart cannot pass or fail it alone."""

from __future__ import annotations

from benchmarks._common import Figure, paired_note


def figure(samples: list[float], floors: list[float], *, paired: bool) -> Figure:
    """A figure with a 2x target and `floors` as the floor timed apart; with `paired`, each
    of them is also the floor timed right after the sample of the same index."""
    apart = Figure(key="floor", label="floor", n=1, unit="s", samples=list(floors))
    fig = Figure(key="f", label="f", n=1, unit="s", samples=samples, ratio_target=2.0)
    fig.floor = apart
    if paired:
        for seconds in floors:
            fig.add_pair_floor(seconds)
    return fig


def test_a_paired_ratio_is_the_median_of_each_run_over_its_own_floor() -> None:
    # The machine slowed down during the third run's floor and stayed slow.
    samples, floors = [1.0, 1.0, 1.0, 2.0, 2.0], [0.5, 0.5, 1.0, 1.0, 1.0]
    paired = figure(samples, floors, paired=True)
    assert paired.paired
    assert paired.ratio == 2.0  # runs 2, 2, 1, 2, 2 times their own floors
    assert paired.ratio_of_medians == 1.0  # what the medians alone would have said
    assert "median over the floor's median: 1.00x" in paired_note(paired)
    alone = figure(samples, floors, paired=False)
    assert not alone.paired
    assert alone.ratio == 1.0
    assert paired_note(alone) == ""


def test_a_slow_floor_cannot_hide_slow_runs() -> None:
    # The runs are 2.4, 2.4, 2.0, 2.1 and 2.1 times the floors taken after them; the
    # medians alone (2.4 over 1.2) would say 2.0x.
    samples, floors = [2.4, 2.4, 2.4, 4.0, 4.0], [1.0, 1.0, 1.2, 1.9, 1.9]
    assert figure(samples, floors, paired=False).passed is True
    assert figure(samples, floors, paired=True).passed is False


def test_a_figure_with_missing_pairs_is_judged_on_the_medians() -> None:
    fig = figure([1.0, 2.0, 3.0], [1.0, 1.0], paired=True)
    assert not fig.paired
    assert fig.ratio == fig.ratio_of_medians == 2.0
