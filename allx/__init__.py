"""allx: train, quantize and run an ALL blood-smear classifier on a Raspberry Pi / Coral."""

__version__ = "0.1.0"
