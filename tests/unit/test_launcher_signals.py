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
