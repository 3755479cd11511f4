"""phf: pretraining language models with human feedback (Korbak et al. 2023).

Data flows source → segment → score → objective transform → pack → loss:
``phf.data`` (sources, segmenters, packing), ``phf.scorers``, ``phf.objectives``, ``phf.train``.
"""

__version__ = "0.1.0"
