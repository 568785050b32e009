"""A catalogue of published hardware specifications, for projections onto machines not measured."""
