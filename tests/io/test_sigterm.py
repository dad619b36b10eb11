"""testbed.sigterm: SIGTERM raises in the process that asked, a child forked meanwhile
exits at once (it must never run the parent's code on: a forked pytest would run the
rest of the session a second time), and the previous handler comes back."""

import os
import signal

import pytest

from acceltcp.testbed.sigterm import raise_on_sigterm


def test_raises_here_and_restores_the_previous_handler():
    before = signal.getsignal(signal.SIGTERM)
    restore = raise_on_sigterm()
    try:
        with pytest.raises(SystemExit) as e:
            os.kill(os.getpid(), signal.SIGTERM)
        assert e.value.code == 143
    finally:
        restore()
    assert signal.getsignal(signal.SIGTERM) is before


def test_a_forked_child_exits_instead_of_raising():
    restore = raise_on_sigterm()
    try:
        pid = os.fork()
        if pid == 0:                                    # the child
            try:
                os.kill(os.getpid(), signal.SIGTERM)
            except BaseException:
                os._exit(1)                             # raised: it would have run on
            os._exit(2)                                 # not reached either
        _, status = os.waitpid(pid, 0)
    finally:
        restore()
    assert os.waitstatus_to_exitcode(status) == 143
