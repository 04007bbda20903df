"""nnhw: a small, Lightning-free PyTorch trainer built on hand-written autograd Functions."""

__version__ = "0.1.0"
