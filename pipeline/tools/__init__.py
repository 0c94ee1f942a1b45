"""Tools: the `cxpulse` command line and what it runs (demo, doctor, evaluate, bench, generator, charts…)."""
