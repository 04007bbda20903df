"""nnhw: a small, Lightning-free PyTorch trainer built on hand-written autograd Functions."""

from pathlib import Path

__version__ = "0.1.0"

PROJECT_ROOT = Path(__file__).resolve().parents[1]  # the checkout: configs/, reports/, tools/ and the git history
