"""The networks: built-in architectures with unit gates, dropout layers, own models wrapped for the
flip search, predictions.
"""
