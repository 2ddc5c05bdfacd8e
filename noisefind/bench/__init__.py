"""Every detector against known label noise: registry, runner, report."""
