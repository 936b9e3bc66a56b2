"""Pure tensor core: model graphs, execution, bounds, profiles, commitments, checks."""
