"""taonode: reference node for TAO, tolerance-aware optimistic verification of ML inference."""

__version__ = "0.1.0"
