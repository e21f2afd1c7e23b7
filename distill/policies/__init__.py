"""Temperature policies: ``forward(teacher_logits, student_logits, epoch) -> Temperatures`` (all ``[B]``).

| class | teacher T | student T | kd_weight | ce_weight |
|---|---|---|---|---|
| FixedTemperature | T | T | kd * T^2 | ce |
| FixedTemperature(standardize=True) | T * (std(t) + 1e-7) | T * (std(s) + 1e-7) | kd * T^2 | ce |
| GridTemperature | one FixedTemperature run per value (distill-sweep) | | | |
| CurriculumTemperature (CTKD) | T(theta) | T(theta) | kd * T^2 | ce |
| MaxLogitTemperature | tau_i * (std(t) + 1e-7) | tau_i * (std(s) + 1e-7) | kd * tau_i^2 | ce |
| SigmaAnchoredTemperature (TALS) | sigma_i^2 | sigma_i^2 | alpha_i * sigma_i^4 | 1 - alpha_i |
| TransformedTeacherTemperature (TTM/WTTM) | T | 1 | beta (* U_i) | 1 |
"""

from distill.policies.base import MIN_TEMPERATURE, Temperatures, TemperaturePolicy, logit_std
from distill.policies.curriculum import CurriculumTemperature, cosine_ramp, reverse_gradient
from distill.policies.fixed import FixedTemperature, standardized_temperature
from distill.policies.grid import GridTemperature
from distill.policies.max_logit import MaxLogitTemperature
from distill.policies.sigma_anchored import SigmaAnchoredTemperature, variance_share
from distill.policies.transformed_teacher import TransformedTeacherTemperature

__all__ = [
    "MIN_TEMPERATURE",
    "CurriculumTemperature",
    "FixedTemperature",
    "GridTemperature",
    "MaxLogitTemperature",
    "SigmaAnchoredTemperature",
    "Temperatures",
    "TemperaturePolicy",
    "TransformedTeacherTemperature",
    "cosine_ramp",
    "logit_std",
    "reverse_gradient",
    "standardized_temperature",
    "variance_share",
]
