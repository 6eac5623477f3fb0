"""Tests of the CLI's progress bars: tqdm's redraw interval on a terminal and on a log."""

from __future__ import annotations

import io
import time

from naslung.pipeline.progress import LOG_REDRAW_S, TERMINAL_REDRAW_S, bar_options, is_terminal, tqdm_progress


class _Terminal(io.StringIO):
    """A stream that says it is a terminal."""

    def isatty(self) -> bool:
        return True


def test_is_terminal():
    assert is_terminal(_Terminal())
    assert not is_terminal(io.StringIO())
    assert not is_terminal(object())  # no isatty: treated as a log


def test_bar_options_redraw_rarely_on_a_log():
    assert bar_options(_Terminal())["mininterval"] == TERMINAL_REDRAW_S
    assert bar_options(io.StringIO())["mininterval"] == LOG_REDRAW_S >= 30


def test_tqdm_progress_on_a_log_draws_no_intermediate_bars(capsys):
    """Half a second of work: tqdm's default interval (0.1 s) would redraw about five times; a log gets the first
    drawing and the clearing at the end only."""
    assert list(tqdm_progress((time.sleep(0.005) or i for i in range(100)), total=100, desc="work")) == list(range(100))
    err = capsys.readouterr().err
    assert err.count("%|") <= 2, err
