"""The Faust application: the thin imperative shell around the pure core."""
