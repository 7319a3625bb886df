"""Tables and plots rendered from results directories."""
