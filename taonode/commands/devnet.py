"""``taonode devnet``: a local network playing honest and cheating jobs end to end."""

from taonode.commands._placeholder import placeholder

register = placeholder(
    "devnet",
    "run a local chain, a prover, challengers and a committee through honest and cheating jobs",
)
