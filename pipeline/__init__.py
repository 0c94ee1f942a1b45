"""cxpulse pipeline: the pure scoring core and the non-Faust adapters."""
