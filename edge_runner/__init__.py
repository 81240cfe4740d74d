"""allx-edge: the device runner (LiteRT interpreter, no TensorFlow) for Raspberry Pi / Coral."""
