"""The `allx` workstation CLI: one small module per verb group, each calling one library function."""
