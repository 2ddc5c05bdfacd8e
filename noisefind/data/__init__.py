"""Every input form -> LabeledData; label noise."""
