"""`allx train` and `allx evaluate` (being implemented)."""

from allx.cli.common import fail


def train():
    """Not implemented yet."""
    raise fail("allx train is not implemented yet")


def evaluate():
    """Not implemented yet."""
    raise fail("allx evaluate is not implemented yet")
