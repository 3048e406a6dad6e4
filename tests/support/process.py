"""Stopping the processes tests start: a signal, a bounded wait, then SIGKILL."""

from __future__ import annotations

import os
import signal
import subprocess


def stop_child(proc: subprocess.Popen | None, sig: int = signal.SIGTERM, timeout: float = 30,
               group: bool = False, kill_group: bool | None = None) -> None:
    """Send sig to proc (to its whole process group when group: proc must lead one, start_new_session=True), then
    SIGCONT so that a stopped process acts on it; wait up to timeout seconds, then SIGKILL it (its group when
    kill_group, which defaults to group) and reap it. Nothing when proc is None or has exited already."""
    if proc is None or proc.poll() is not None:
        return
    kill_group = group if kill_group is None else kill_group

    def send(s: int, to_group: bool) -> None:
        try:
            os.killpg(proc.pid, s) if to_group else proc.send_signal(s)
        except ProcessLookupError:
            pass

    send(sig, group)
    send(signal.SIGCONT, group)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        send(signal.SIGKILL, kill_group)
        proc.wait()
