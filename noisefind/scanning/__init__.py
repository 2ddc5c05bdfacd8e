"""The scan pipeline: signals -> decisions -> files (suspects.csv, summary.json, pictures),
progress and resume, the review page, export.
"""
