"""systemd socket activation: the listening socket a service manager handed the driver, if any.

The protocol is sd_listen_fds(3): `LISTEN_PID` is the pid of the process meant to take the sockets,
`LISTEN_FDS` how many there are, starting at fd 3. systemd (`ownvol-plugin.socket`) and
`systemd-socket-activate` both speak it; gunicorn's arbiter takes those fds itself (gunicorn/systemd.py,
gunicorn/arbiter.py: `listen_fds()`), so this module only reads the variables, without consuming them.
"""

from __future__ import annotations

import os
import socket
import stat
from collections.abc import Mapping

SD_LISTEN_FDS_START = 3


class ActivationError(RuntimeError):
    pass


def listening_socket(env: Mapping[str, str] | None = None, pid: int | None = None) -> str | None:
    """The path of the unix socket passed by socket activation, or None when nothing was passed to this process.

    env and pid default to os.environ and os.getpid(). Raises ActivationError when the passed fds are not
    exactly one listening AF_UNIX stream socket bound to a path (what ownvol-plugin.socket's one
    ListenStream= gives).
    """
    if env is None:
        env = os.environ
    if env.get("LISTEN_PID", "") != str(os.getpid() if pid is None else pid):
        return None
    count = env.get("LISTEN_FDS", "")
    if count != "1":
        raise ActivationError(f"LISTEN_FDS={count!r}: the driver takes exactly one socket (one ListenStream= "
                              "in ownvol-plugin.socket)")
    fd = SD_LISTEN_FDS_START
    try:
        if not stat.S_ISSOCK(os.fstat(fd).st_mode):
            raise ActivationError(f"fd {fd} passed by socket activation is not a socket")
        sock = socket.socket(fileno=os.dup(fd))
    except OSError as exc:
        raise ActivationError(f"fd {fd} passed by socket activation cannot be used: {exc}") from None
    with sock:
        listening = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN)
        if sock.family != socket.AF_UNIX or sock.type != socket.SOCK_STREAM or not listening:
            raise ActivationError(f"fd {fd} passed by socket activation is not a listening unix stream socket "
                                  "(ListenStream=/run/docker/plugins/NAME.sock, Accept=no)")
        path = sock.getsockname()
    if not isinstance(path, str) or not path.startswith("/"):
        raise ActivationError(f"the socket passed by socket activation is bound to {path!r}, not to a path")
    return path
