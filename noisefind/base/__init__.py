"""What every layer may use: errors, the console, safe files, keyed random numbers, devices,
torchrun.
"""
