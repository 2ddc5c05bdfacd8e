"""Evidence per example (flip search, out-of-sample models, neighbours, training dynamics,
canaries): arrays out, no decisions, no files.
"""
