"""Experiments of the paper, one command each (``translution experiment ...``)."""
