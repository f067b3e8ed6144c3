"""The one progress bar: tqdm frames on a terminal, whole lines every few percent in files and pipes."""

from __future__ import annotations

import io

import pytest

from cpnet.runtime import progress as progress_mod
from cpnet.runtime.progress import PlainBar, progress


class Tty(io.StringIO):
    def isatty(self):
        return True


def test_a_file_gets_whole_lines_every_few_percent_and_one_at_the_end(monkeypatch):
    monkeypatch.delenv("CPNET_PROGRESS", raising=False)
    out = io.StringIO()
    bar = progress(total=200, desc="train", unit="it", file=out)
    assert isinstance(bar, PlainBar)
    bar.min_seconds = 0
    for i in range(200):
        bar.update(1)
        if i == 100:
            bar.set_postfix(loss="0.25")
    bar.close()
    text = out.getvalue()
    assert "\r" not in text
    lines = text.splitlines()
    assert 15 <= len(lines) <= 21, lines  # every 5 percent and the end
    assert lines[0].startswith("train:   5% 10/200 it")
    assert lines[-1].startswith("train: 100% 200/200 it") and "loss=0.25" in lines[-1]


def test_iterating_writes_at_most_one_line_a_second_plus_the_last(monkeypatch):
    monkeypatch.delenv("CPNET_PROGRESS", raising=False)
    out = io.StringIO()
    items = list(progress(range(1000), desc="eval", unit="img", file=out))
    assert items == list(range(1000))
    lines = out.getvalue().splitlines()
    assert len(lines) == 1 and lines[0].startswith("eval: 100% 1000/1000 img")


def test_a_terminal_gets_tqdm_and_the_environment_can_choose(monkeypatch):
    monkeypatch.delenv("CPNET_PROGRESS", raising=False)
    from tqdm import tqdm

    bar = progress(total=3, file=Tty())
    assert isinstance(bar, tqdm)
    bar.close()
    monkeypatch.setenv("CPNET_PROGRESS", "plain")
    assert isinstance(progress(total=3, file=Tty()), PlainBar)
    monkeypatch.setenv("CPNET_PROGRESS", "off")
    out = io.StringIO()
    bar = progress(total=3, file=out)
    bar.update(3)
    bar.close()
    assert out.getvalue() == ""


def test_disabled_bar_writes_nothing(monkeypatch):
    out = io.StringIO()
    assert list(progress([1, 2], disable=True, file=out)) == [1, 2]
    assert out.getvalue() == ""


@pytest.mark.parametrize("initial", [0, 50])
def test_resumed_bar_counts_from_initial(initial):
    out = io.StringIO()
    bar = PlainBar(total=100, initial=initial, desc="train", file=out, min_seconds=0)
    bar.update(100 - initial)
    bar.close()
    assert out.getvalue().splitlines()[-1].startswith("train: 100% 100/100")
    assert progress_mod.style(io.StringIO()) in ("plain", "bar", "off")
