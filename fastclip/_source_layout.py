"""Makes `fastclip.kernels` importable from a checkout used in place, without an install.

An install maps the checkout's top-level kernels/ folder to the package fastclip.kernels (setup.py's package_dir).
A checkout used as it is - `python setup.py build_ext --inplace` with the checkout on PYTHONPATH, as on a bare GPU
machine where nothing is pip-installed - has no such mapping; this finder provides it. It only names the folder:
nothing in kernels/ (which imports Triton) is imported until an op asks for a kernel.
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import os
import sys

KERNELS_PACKAGE = "fastclip.kernels"


class CheckoutKernelsFinder(importlib.abc.MetaPathFinder):
    def __init__(self, folder: str):
        self.folder = folder

    def find_spec(self, fullname, path=None, target=None):
        if fullname != KERNELS_PACKAGE:
            return None
        return importlib.util.spec_from_file_location(
            KERNELS_PACKAGE, os.path.join(self.folder, "__init__.py"), submodule_search_locations=[self.folder]
        )


def map_checkout_kernels(package_dir: str) -> None:
    """Register the finder when fastclip is imported from a checkout (setup.py and kernels/ beside the package)
    that holds no fastclip/kernels of its own; an installed fastclip has that folder and needs nothing."""
    if os.path.isdir(os.path.join(package_dir, "kernels")):
        return
    checkout = os.path.dirname(os.path.abspath(package_dir))
    folder = os.path.join(checkout, "kernels")
    if not (os.path.isfile(os.path.join(folder, "__init__.py")) and os.path.isfile(os.path.join(checkout, "setup.py"))):
        return
    if not any(isinstance(finder, CheckoutKernelsFinder) for finder in sys.meta_path):
        sys.meta_path.append(CheckoutKernelsFinder(folder))
