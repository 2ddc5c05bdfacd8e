"""The paper's analyses: where memorization lives, the Feldman-Zhang estimate, example-tied
dropout's evaluation.
"""
