"""distadv: distributed adversarial training of robust image classifiers."""

__version__ = "0.1.0"
