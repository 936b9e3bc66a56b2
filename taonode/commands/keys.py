"""``taonode keys``: create, import and inspect encrypted keystores."""

from taonode.commands._placeholder import placeholder

register = placeholder("keys", "create, import and inspect encrypted keystores")
