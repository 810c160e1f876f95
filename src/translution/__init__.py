"""Translution: attention with a query/key/value matrix per relative offset (arXiv 2510.10060).

Public API::

    from translution import Translution, AlphaTranslution, SelfAttention, layouts, functional
    from translution import create_model, list_models          # ViT / GPT registry
"""

from . import functional, layouts
from .functional import alpha_translution, translution
from .layers import AlphaTranslution, SelfAttention, Translution
from .layouts import Grid, Sequence
from .models import create_model, list_models

__version__ = "0.1.0"

__all__ = ["functional", "layouts", "translution", "alpha_translution", "Translution",
           "AlphaTranslution", "SelfAttention", "Grid", "Sequence", "create_model",
           "list_models", "__version__"]
