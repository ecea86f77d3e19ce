"""MultiMem Studio engine: measure, explain and mitigate memorization in multi-modal contrastive models."""

__version__ = "0.1.0"
