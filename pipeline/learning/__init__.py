"""Training the churn model: pure (no I/O, no clock), may import numpy, scikit-learn and
LightGBM. Produces model values the core scores with (pipeline/domain/churn_model.py)."""
