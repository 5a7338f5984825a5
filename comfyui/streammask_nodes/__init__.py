"""ComfyUI entry point of the streammask node pack, for a pip-installed streammask.

The usual install is the repository itself in ``custom_nodes/`` (``git clone``, as ComfyUI-Manager
does; its ``__init__.py`` is the entry point). This folder is the other way: install streammask
into ComfyUI's Python (``pip install /path/to/streammask``, or ``pip install -e`` for a checkout),
then copy or symlink this folder into ``ComfyUI/custom_nodes`` (any name: ComfyUI imports a node
pack under its path, so even a link named ``streammask`` does not hide the package).
"""

try:
    from streammask.comfy import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS, register_model_folder
except ModuleNotFoundError as exc:
    if exc.name != "streammask":
        raise
    raise ModuleNotFoundError(
        "The streammask ComfyUI nodes need the streammask package in ComfyUI's Python environment: run "
        "`<ComfyUI's python> -m pip install /path/to/streammask` (or `pip install -e` for a checkout), then restart "
        "ComfyUI; or install the repository itself as the node pack (git clone into custom_nodes/, then "
        "pip install -r requirements.txt).",
        name="streammask",
    ) from exc

register_model_folder()

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS"]
