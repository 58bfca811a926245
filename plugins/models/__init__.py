"""First-party model families and the kernels they share: what lives where.

- :mod:`.plugin`: registers ``regression-moe``; :mod:`.classification`, :mod:`.deep` and
  :mod:`.symmetric` register their own families (each an entry point of its own).
- :mod:`.regression`: ``RegressionMoE`` (linear, sigmoid and ReLU experts); its ``em`` module is
  where the E-step is.
- :mod:`.classification`, :mod:`.deep`, :mod:`.symmetric`: the other families.
- :mod:`.gate`: the gate M-step (damped Newton on the soft-label softmax regression) and the
  norm-ball projection.
- :mod:`.spectral`: the moment tensors of Makkuva et al. (2019) used by ``tensor-em``.
- :mod:`.kernels`: chunked passes over the data (E-step statistics, gate systems, Grams);
  :mod:`.native`: their C sources, compiled and cached on first use.
- :mod:`.caching`: values derived from a piece of data, kept with it while it lives.
- :mod:`.alignment`: distances to the truth up to the label switching of experts.
"""
