"""Translution: attention with a query/key/value matrix per relative offset (arXiv 2510.10060)."""
from . import layouts, functional
