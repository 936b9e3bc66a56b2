"""Role services (prover, challenger, voter) over the pure core and the adapters."""
