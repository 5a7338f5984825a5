"""ComfyUI entry point of the streammask node pack.

ComfyUI imports ``custom_nodes/<folder>/__init__.py`` and reads
``NODE_CLASS_MAPPINGS`` / ``NODE_DISPLAY_NAME_MAPPINGS``; the nodes themselves
live in :mod:`streammask.comfy`, so install streammask into ComfyUI's Python
first, then copy or symlink this folder into ``ComfyUI/custom_nodes``.

Keep the folder's name ``streammask_nodes``: ComfyUI registers a node pack
under its folder name, and a folder called ``streammask`` would shadow the
``streammask`` package itself.
"""

try:
    from streammask.comfy import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS
except ModuleNotFoundError as exc:
    if exc.name != "streammask":
        raise
    raise ModuleNotFoundError(
        "The streammask ComfyUI nodes need the streammask package in ComfyUI's Python environment: run "
        "`<ComfyUI's python> -m pip install /path/to/streammask` (or `pip install -e` for a checkout), then restart ComfyUI.",
        name="streammask",
    ) from exc

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS"]
