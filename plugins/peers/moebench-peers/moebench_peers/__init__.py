"""Peer implementations of mixture-of-experts EM, run on moebench's data and initialisation."""

from .runners import cgmm_available, cgmm_fit, flexmix_available, flexmix_fit

__all__ = ["cgmm_available", "cgmm_fit", "flexmix_available", "flexmix_fit"]
