"""What the apps' command-line helpers share (``add_kv_arguments``, ``add_lb_arguments``):
adding an option to a parser that may already define it."""

import argparse

__all__ = ["add_option"]


def add_option(parser, *flags, **kwargs):
    """``parser.add_argument(*flags, **kwargs)``, unless the command already defines one
    of the flags (``acceltcp serve`` has its own --port and --backlog): then nothing."""
    try:
        parser.add_argument(*flags, **kwargs)
    except argparse.ArgumentError:
        pass
