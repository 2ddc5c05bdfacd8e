"""Pure functions on arrays: the default order, the cutoff and the count, suggested labels."""
