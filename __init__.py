"""ComfyUI entry point: this repository is itself the streammask node pack.

Install it as ComfyUI-Manager does: ``git clone <repo> ComfyUI/custom_nodes/streammask`` and
``pip install -r requirements.txt`` with ComfyUI's Python. ComfyUI imports this file by its path
(the module is named after the path, so the folder's name does not matter) and reads
``NODE_CLASS_MAPPINGS`` / ``NODE_DISPLAY_NAME_MAPPINGS``.

The nodes live in the ``streammask`` package beside this file, and are imported from here, not
from an installed copy: ``git pull`` in the clone updates them (restart ComfyUI). Nothing in this
file runs outside that import; the package stays installable with ``pip install -e .`` and the
tests import it as usual.
"""

import importlib.util
import logging
import os
import sys
from pathlib import Path


def _streammask_here():
    """The ``streammask`` package of this folder, imported under its own name (once)."""
    here = Path(__file__).resolve().parent / "streammask"
    loaded = sys.modules.get("streammask")
    # ``loaded is this module``: a test runner imported this folder under the name "streammask"
    # (a clone named streammask whose parent is on sys.path): replace it by the real package
    if loaded is not None and loaded is not sys.modules.get(__name__):
        origin = Path(getattr(loaded, "__file__", "") or ".").resolve().parent
        if origin != here:
            logging.getLogger("streammask").warning(
                "streammask nodes: the streammask package was already imported from %s (another install of the "
                "node pack or of the package); the nodes use that copy, not %s. Remove one of the two installs.",
                origin, here)
        return loaded
    spec = importlib.util.spec_from_file_location("streammask", here / "__init__.py",
                                                  submodule_search_locations=[str(here)])
    module = importlib.util.module_from_spec(spec)
    sys.modules["streammask"] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules["streammask"]
        raise
    logging.getLogger("streammask").info("streammask nodes: the streammask package in %s", here)
    return module


def _as_node_pack() -> bool:
    """Whether ComfyUI is importing this folder as a node pack: 0.3.64 names the module after its path; older
    versions after the folder (``streammask`` once cloned); ``folder_paths`` is ComfyUI's. Anything else is a
    test runner importing the checkout as a plain package (pytest imports a rootdir ``__init__.py``): then this
    file does nothing."""
    return "folder_paths" in sys.modules or os.sep in __name__ or "/" in __name__ or __name__ == "streammask"


if _as_node_pack():
    _streammask_here()

    from streammask.comfy import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS, register_model_folder

    register_model_folder()

    __all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS"]
