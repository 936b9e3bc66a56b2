"""``taonode profile``: show and merge tolerance profiles."""

from taonode.commands._placeholder import placeholder

register = placeholder("profile", "show and merge tolerance profiles")
