"""Units shared by every figure: memory in MiB (2**20 bytes), as nvidia-smi and the original log print it."""

MIB = 2**20
