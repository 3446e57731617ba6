"""Semi-supervised methods as small strategies, registered by name.

Importing this package registers every built-in method; :data:`METHODS` maps each
name to its class and drives the command line and the napari panel alike.
"""

from .base import METHODS, Method, StepContext, create_method, method_config, register
from . import supervised, mean_teacher, ua_mt, adversarial, entropy_min  # noqa: F401,E402  (registration)

__all__ = ["METHODS", "Method", "StepContext", "create_method", "method_config", "register"]
