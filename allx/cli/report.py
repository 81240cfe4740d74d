"""`allx report` (not yet implemented: see the open issue)."""

from allx.cli.common import fail


def report():
    """Not implemented yet."""
    raise fail("allx report is not implemented yet")
