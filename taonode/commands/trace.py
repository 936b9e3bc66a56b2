"""``taonode trace``: run a model op by op and write its trace."""

from taonode.commands._placeholder import placeholder

register = placeholder("trace", "run a model op by op and write its trace")
