"""What production runs (README, "Running in production"), and ``make stack``."""
