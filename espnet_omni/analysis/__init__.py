"""Routing analysis: statistics of router decisions, per layer and across layers."""
