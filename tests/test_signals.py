"""The stop signals (Ctrl-C, SIGTERM, SIGHUP) and the three ways dltrain takes them, in this
process: raised at once, held until a block of writes is done, or taken at safe points only.
signal.raise_signal runs the Python handler before it returns, so each step is deterministic;
the commands' behaviour under real signals is in test_faults.py, test_tune.py, test_serve.py."""

from __future__ import annotations

import signal
import threading

import pytest

from dltrain import signals
from dltrain.errors import Interrupted, signal_of


@pytest.fixture(autouse=True)
def handlers_put_back():
    """Every test leaves the handlers as it found them (and so must the module)."""
    before = {number: signal.getsignal(number) for number in signals.STOP_SIGNALS}
    yield
    after = {number: signal.getsignal(number) for number in signals.STOP_SIGNALS}
    for number, handler in before.items():
        signal.signal(number, handler)
    assert after == before


def test_one_list_of_stop_signals():
    assert signals.STOP_SIGNALS == (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


@pytest.mark.parametrize("number", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP])
def test_each_stops_the_block_as_ctrl_c_does(number):
    with pytest.raises(KeyboardInterrupt) as stopped, signals.stop_as_interrupt():
        signal.raise_signal(number)
    assert isinstance(stopped.value, Interrupted) and signal_of(stopped.value) == number


def test_a_signal_the_process_ignores_stays_ignored():
    """nohup sets SIGHUP to be ignored: a closed terminal must not stop the fit."""
    previous = signal.signal(signal.SIGHUP, signal.SIG_IGN)
    try:
        with signals.stop_as_interrupt():
            signal.raise_signal(signal.SIGHUP)
            assert signal.getsignal(signal.SIGHUP) is signal.SIG_IGN
        with signals.deferred():
            signal.raise_signal(signal.SIGHUP)
    finally:
        signal.signal(signal.SIGHUP, previous)


def test_a_deferred_signal_waits_for_the_block_then_is_raised():
    done = []
    with pytest.raises(Interrupted) as stopped, signals.stop_as_interrupt():
        with signals.deferred():
            signal.raise_signal(signal.SIGTERM)
            signal.raise_signal(signal.SIGINT)  # a second one while waiting: the first is raised
            done.append("the whole block")
    assert done == ["the whole block"] and stopped.value.signal_number == signal.SIGTERM


def test_deferred_blocks_nest_the_outer_one_holds_until_it_is_done():
    """The checkpoint of an epoch (a deferred write) inside the epoch's end (deferred too)."""
    steps = []
    with pytest.raises(Interrupted):
        with signals.deferred():
            with signals.deferred():
                signal.raise_signal(signal.SIGTERM)
                steps.append("checkpoint")
            steps.append("epoch line")
    assert steps == ["checkpoint", "epoch line"]


def test_a_deferred_signal_inside_safe_points_waits_for_the_next_check():
    """A commit inside a tune worker: the held signal goes to the worker, which stops where it checks."""
    with signals.SafePoints() as safe_points:
        with signals.deferred():
            signal.raise_signal(signal.SIGTERM)
        assert safe_points.received == signal.SIGTERM
        with pytest.raises(Interrupted) as stopped:
            safe_points.check()
    assert stopped.value.signal_number == signal.SIGTERM


def test_safe_points_take_the_first_signal_at_a_check_and_a_second_at_once():
    with signals.SafePoints() as safe_points:
        safe_points.check()
        signal.raise_signal(signal.SIGINT)
        with pytest.raises(Interrupted):
            signal.raise_signal(signal.SIGINT)
    with signals.SafePoints(escalate=False) as patient:
        signal.raise_signal(signal.SIGINT)
        signal.raise_signal(signal.SIGTERM)
        with pytest.raises(Interrupted) as stopped:
            patient.check()
    assert stopped.value.signal_number == signal.SIGTERM


def test_a_block_outside_the_main_thread_changes_nothing():
    installed = []

    def work():
        with signals.stop_as_interrupt(), signals.deferred(), signals.SafePoints() as safe_points:
            installed.append(signal.getsignal(signal.SIGTERM))
            safe_points.check()

    thread = threading.Thread(target=work)
    thread.start()
    thread.join()
    assert installed == [signal.getsignal(signal.SIGTERM)]


def test_the_handlers_are_put_back_when_a_block_ends_by_an_error():
    previous = signal.getsignal(signal.SIGTERM)
    with pytest.raises(ZeroDivisionError), signals.stop_as_interrupt(), signals.deferred():
        assert signal.getsignal(signal.SIGTERM) is not previous
        _ = 1 / 0
    assert signal.getsignal(signal.SIGTERM) is previous


def test_outside_any_block_a_deferred_signal_goes_to_the_programs_own_handler():
    """dltrain.fit inside a program with its own SIGTERM handler: a commit holds the signal, then
    that handler gets it (it was once raised as Ctrl-C instead)."""
    calls = []
    previous = signal.signal(signal.SIGTERM, lambda number, frame: calls.append(number))
    try:
        with signals.deferred():
            signal.raise_signal(signal.SIGTERM)
            assert calls == []
        assert calls == [signal.SIGTERM]
    finally:
        signal.signal(signal.SIGTERM, previous)
    with pytest.raises(KeyboardInterrupt), signals.deferred():  # Python's own Ctrl-C handler
        signal.raise_signal(signal.SIGINT)
