"""Semi-supervised methods as small strategies, registered by name.

Importing this package imports every module in it, and each registers its method;
:data:`METHODS` maps each name to its class and drives the command line, the napari
panel, the benchmark and the tests alike. A new method is one file here.
"""

import importlib
import pkgutil

from ..config import DEFAULT_METHOD
from .base import METHODS, Method, StepContext, create_method, method_config, register, student_pass, supervised_loss

for _module in sorted(m.name for m in pkgutil.iter_modules(__path__)):
    if _module != "base":
        importlib.import_module(f"{__name__}.{_module}")

__all__ = ["DEFAULT_METHOD", "METHODS", "Method", "StepContext", "create_method", "method_config", "register", "student_pass", "supervised_loss"]
