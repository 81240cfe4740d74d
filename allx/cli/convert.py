"""`allx convert` (not yet implemented: see the open issue)."""

from allx.cli.common import fail


def convert():
    """Not implemented yet."""
    raise fail("allx convert is not implemented yet")
