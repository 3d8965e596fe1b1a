"""`forge up`'s wait for Ctrl-C / SIGTERM: a second signal must not deadlock or abort it."""

from __future__ import annotations

import os
import signal
import threading
import time

from serve.launcher import wait_for_signal


def test_two_quick_signals_return_once_and_later_ones_are_ignored():
    def send() -> None:
        time.sleep(0.1)
        os.kill(os.getpid(), signal.SIGTERM)
        os.kill(os.getpid(), signal.SIGTERM)  # e.g. `timeout` forwarding one on top of ours

    sender = threading.Thread(target=send)
    sender.start()
    try:
        assert wait_for_signal(poll_s=0.01) == signal.SIGTERM
        sender.join(5)
        os.kill(os.getpid(), signal.SIGINT)  # during shutdown: ignored, no KeyboardInterrupt
        time.sleep(0.05)
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)


def test_a_signal_while_starting_unwinds_the_start_instead_of_killing_the_process():
    """SIGTERM between Serve answering and the URL being printed used to end `forge up`
    with status 15 and a stack dump; it now raises StopRequested, which `forge up`
    catches to stop cleanly."""
    import pytest

    from serve.launcher import StopRequested, StopSignals

    signals = StopSignals()
    try:
        with pytest.raises(StopRequested):
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)  # "starting": interrupted at once
        os.kill(os.getpid(), signal.SIGTERM)  # while stopping: ignored
        time.sleep(0.05)
        assert signals.received == [signal.SIGTERM]
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
