"""The HTTP/1.1 layer-7 load balancer (``apps.lb``); see ``server``."""

from .server import *  # noqa: F401,F403
from .server import (__all__, _Backend, _connect_config, _LeastConn,  # noqa: F401
                     _RoundRobin, _UriHash)
