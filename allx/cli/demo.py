"""`allx demo` (not yet implemented: see the open issue)."""

from allx.cli.common import fail


def demo():
    """Not implemented yet."""
    raise fail("allx demo is not implemented yet")
