"""``taonode contracts``: build and deploy the TAO contracts."""

from taonode.commands._placeholder import placeholder

register = placeholder("contracts", "build and deploy the TAO contracts")
