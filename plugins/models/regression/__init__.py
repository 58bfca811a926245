"""The regression MoE family (``regression-moe``): what lives where.

- :mod:`.family`: :class:`RegressionMoE` itself (hyper-parameters, initialisation, densities,
  predictions, parameter error) and :class:`InitError`.
- :mod:`.em`: WHERE THE E-STEP IS: ``posterior``, ``joint_log_probs``, ``log_likelihood``,
  ``m_step``, ``em_step`` (the E-step fused with the M-step statistics) and the gate M-step.
- :mod:`.experts`: the M-step of the experts and the noise (``m_step_experts``).
- :mod:`.mirror`: the mirror-descent step (``eta < 1``), its diagnostics and the complete-data KL.
- :mod:`.gradient`: the gradient view: free parameters, the chunked NLL (Fisher's identity) and
  the ``Q`` oracle of ``gradient-em``.
- :mod:`.numerics`: numerical helpers (noise updates, solves, gate and expert objectives).
"""

from .family import Activation, InitError, RegressionMoE
from .numerics import activate_grad

__all__ = ["Activation", "InitError", "RegressionMoE", "activate_grad"]
