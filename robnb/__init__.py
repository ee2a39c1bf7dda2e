"""robnb: scaling trends in adversarial and out-of-distribution robustness of LM classifiers."""

__version__ = "0.1.0"
