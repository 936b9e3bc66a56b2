"""``taonode model``: export, inspect and register models."""

from taonode.commands._placeholder import placeholder

register = placeholder("model", "export, inspect and register models")
