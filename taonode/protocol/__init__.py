"""Pure protocol logic: cut schedule, dispute state machine, votes, role decisions (no IO)."""
