"""Autoregressive sampling: ``sampler.generate`` and its engines (the numba CPU step in ``fast_step``, CUDA graphs
in ``graph_step``, the plain module loop), over token sampling helpers in ``sampling``. Imports ``nn`` and
``ops``."""
