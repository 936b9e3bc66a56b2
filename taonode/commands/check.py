"""``taonode check``: check a trace against the theoretical bounds and a profile."""

from taonode.commands._placeholder import placeholder

register = placeholder("check", "check a trace against the theoretical bounds and a profile")
