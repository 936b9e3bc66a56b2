"""``taonode calibrate``: calibrate an empirical tolerance profile."""

from taonode.commands._placeholder import placeholder

register = placeholder("calibrate", "calibrate an empirical tolerance profile")
