"""A checkout used in place (build_ext --inplace, the checkout on sys.path, nothing installed) imports its Triton
kernels as fastclip.kernels, as the bare GPU machine's run.sh relies on."""

from __future__ import annotations

import subprocess
import sys

from tests.helpers import REPO_ROOT

# -S: no site-packages, so no editable-install finder either; only the checkout on sys.path.
CODE = f"""
import sys
sys.path.insert(0, {str(REPO_ROOT)!r})
import fastclip.kernels
print(fastclip.kernels.__file__)
print("triton" in sys.modules, "torch" in sys.modules)
"""


def test_kernels_import_from_a_checkout_that_was_not_installed():
    result = subprocess.run([sys.executable, "-S", "-c", CODE], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    path, loaded = result.stdout.splitlines()
    assert path == str(REPO_ROOT / "kernels" / "__init__.py")
    assert loaded == "False False"  # naming the package imports neither Triton nor torch


def test_an_installed_layout_keeps_its_own_kernels_package(tmp_path):
    """A fastclip with its own fastclip/kernels (a wheel install) gets no finder, whatever sits beside it."""
    from fastclip._source_layout import CheckoutKernelsFinder, map_checkout_kernels

    package = tmp_path / "site" / "fastclip"
    (package / "kernels").mkdir(parents=True)
    (tmp_path / "site" / "kernels").mkdir()
    (tmp_path / "site" / "kernels" / "__init__.py").write_text("")
    (tmp_path / "site" / "setup.py").write_text("")
    before = [finder for finder in sys.meta_path if isinstance(finder, CheckoutKernelsFinder)]
    map_checkout_kernels(str(package))
    assert [finder for finder in sys.meta_path if isinstance(finder, CheckoutKernelsFinder)] == before
