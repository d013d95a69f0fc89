"""autolabel: from a folder of unlabeled photos to a trained, exported detector."""

__version__ = "0.1.0"

__all__ = ["__version__"]
