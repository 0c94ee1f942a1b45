"""cxpulse pipeline: domain (the pure core), service (use cases), adapters (I/O), tools (the
command line and what it runs) and bootstrap (where the settings meet them); README.md,
"Architecture", gives the import rules."""
