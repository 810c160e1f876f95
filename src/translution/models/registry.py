"""A timm-style model registry: :func:`register_model`, :func:`create_model`, :func:`list_models`.

Every built-in model is a configuration (a :class:`~translution.models.ViTConfig` or
:class:`~translution.models.GPTConfig`) registered under a name such as ``vit_tiny_translution``
or ``gpt_small_rope``; :func:`create_model` builds it, replacing config fields by keyword
overrides::

    >>> from translution.models import create_model, list_models
    >>> list_models("vit_tiny_*")[:3]
    ['vit_tiny_alpha', 'vit_tiny_ape', 'vit_tiny_bias']
    >>> model = create_model("vit_mnist_translution", image_size=42)
    >>> model.config.image_size
    42

Checkpoints store ``model.config.to_dict()``; :func:`model_from_config` rebuilds the model from
that dict (or from the dataclass itself).

Custom models register a function that takes keyword overrides and returns a module::

    @register_model
    def my_vit(**overrides):
        return VisionTransformer(ViTConfig(dim=96, depth=4, heads=2), **overrides)
"""

from __future__ import annotations

import dataclasses
import difflib
import fnmatch
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple, Type, Union

from torch import nn

__all__ = ["register_model", "register_config", "create_model", "list_models",
           "get_model_config", "is_model", "model_from_config", "register_family",
           "apply_overrides"]

_MODELS: Dict[str, Callable[..., nn.Module]] = {}
_CONFIGS: Dict[str, Any] = {}
# family name -> (config class, model class)
_FAMILIES: Dict[str, Tuple[type, Type[nn.Module]]] = {}


def register_family(name: str, config_cls: type, model_cls: Type[nn.Module]) -> None:
    """Declare a model family (``"vit"``, ``"gpt"``) so :func:`model_from_config` can rebuild
    its models from a config or a config dict carrying ``family=name``."""
    _FAMILIES[name] = (config_cls, model_cls)


def apply_overrides(config: Any, overrides: Mapping[str, Any]) -> Any:
    """``dataclasses.replace(config, **overrides)`` with a clear error for unknown fields.

    Raises:
        ValueError: an override names no field of the config (the message lists the fields).
    """
    fields = [f.name for f in dataclasses.fields(config)]
    unknown = sorted(set(overrides) - set(fields))
    if unknown:
        raise ValueError(f"unknown override(s) {unknown} for {type(config).__name__}; "
                         f"valid fields are: {', '.join(fields)}")
    return dataclasses.replace(config, **overrides) if overrides else config


def register_model(fn: Optional[Callable[..., nn.Module]] = None, *, name: Optional[str] = None,
                   config: Any = None):
    """Register a model constructor under ``name`` (default: the function's ``__name__``).

    Usable as ``@register_model``, ``@register_model(name="...")`` or as a plain call. The
    function takes keyword overrides and returns an ``nn.Module``. ``config`` (optional) is the
    entry's default configuration dataclass, returned by :func:`get_model_config`.

    Raises:
        ValueError: the name is already registered.
        TypeError: ``fn`` is not callable.
    """
    def decorate(f):
        if not callable(f):
            raise TypeError(f"register_model expects a callable, got {type(f).__name__}")
        key = name if name is not None else f.__name__
        if not isinstance(key, str) or not key:
            raise ValueError(f"model name must be a non-empty string, got {key!r}")
        if key in _MODELS:
            raise ValueError(f"a model named {key!r} is already registered")
        _MODELS[key] = f
        if config is not None:
            _CONFIGS[key] = config
        return f

    return decorate if fn is None else decorate(fn)


def register_config(name: str, model_cls: Callable[[Any], nn.Module], config: Any,
                    doc: Optional[str] = None) -> Callable[..., nn.Module]:
    """Register ``name`` as ``model_cls(config)``; :func:`create_model` overrides replace
    fields of ``config`` (unknown ones raise a ``ValueError`` listing the valid fields).

    Returns:
        the registered factory ``f(**overrides) -> model``.
    """
    def factory(**overrides):
        return model_cls(apply_overrides(config, overrides))

    factory.__name__ = factory.__qualname__ = name
    factory.__doc__ = doc
    return register_model(factory, name=name, config=config)


def _unknown_name(name) -> ValueError:
    close = difflib.get_close_matches(str(name), list(_MODELS), n=5)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    return ValueError(f"unknown model {name!r}{hint} (list_models() gives all "
                      f"{len(_MODELS)} registered names)")


def is_model(name: str) -> bool:
    """Whether ``name`` is a registered model."""
    return name in _MODELS


def list_models(pattern: str = "*") -> List[str]:
    """Sorted registered names matching a shell-style ``pattern`` (:mod:`fnmatch`)."""
    if not isinstance(pattern, str):
        raise TypeError(f"pattern must be a string such as 'vit_*', got {type(pattern).__name__}")
    return sorted(n for n in _MODELS if fnmatch.fnmatchcase(n, pattern))


def get_model_config(name: str, **overrides) -> Any:
    """The configuration dataclass ``create_model(name, **overrides)`` would build, without
    building the model (cheap even for large models).

    Raises:
        ValueError: unknown name or override, or the entry has no registered config.
    """
    if name not in _MODELS:
        raise _unknown_name(name)
    if name not in _CONFIGS:
        raise ValueError(f"model {name!r} was registered without a config")
    return apply_overrides(_CONFIGS[name], overrides)


def create_model(name: str, **overrides) -> nn.Module:
    """Build a registered model; keyword overrides replace fields of its config.

    Example:
        >>> create_model("gpt_micro_translution", vocab_size=50, block_size=8).config.block_size
        8

    Raises:
        ValueError: unknown model name (with close matches), unknown override (with the list of
            valid fields), or an invalid value.
    """
    if not isinstance(name, str):
        raise TypeError(f"model name must be a string, got {type(name).__name__}")
    if name not in _MODELS:
        raise _unknown_name(name)
    return _MODELS[name](**overrides)


def model_from_config(config: Union[Mapping[str, Any], Any]) -> nn.Module:
    """Rebuild a model from its config dataclass or from ``config.to_dict()`` (as stored in a
    checkpoint: a dict with a ``family`` key).

    Raises:
        ValueError: unknown family or fields.
        TypeError: neither a known config nor a mapping.
    """
    for config_cls, model_cls in _FAMILIES.values():
        if isinstance(config, config_cls):
            return model_cls(config)
    if isinstance(config, Mapping):
        family = config.get("family")
        if family not in _FAMILIES:
            raise ValueError(f"config dict needs 'family' set to one of {sorted(_FAMILIES)}, "
                             f"got {family!r}")
        config_cls, model_cls = _FAMILIES[family]
        return model_cls(config_cls.from_dict(config))
    raise TypeError(f"expected a model config ({', '.join(c.__name__ for c, _ in _FAMILIES.values())}) "
                    f"or a dict from config.to_dict(), got {type(config).__name__}")
