"""Stand-ins for the few ComfyUI modules the nodes touch, for tests without a ComfyUI server.

``folder_paths`` keeps ComfyUI 0.3.64's semantics for what the nodes use (``add_model_folder_path``,
``get_folder_paths``, the input / output / temp folders, ``get_annotated_filepath``,
``filter_files_content_types``); ``comfy_api.input_impl.VideoFromFile`` and
``comfy_execution.graph_utils.ExecutionBlocker`` are the two classes the video node returns.
``tests/test_comfy_server.py`` runs the nodes in the real server.
"""

from __future__ import annotations

import mimetypes
import os
import sys
import types
from pathlib import Path


def fake_folder_paths(base: Path) -> types.ModuleType:
    """A ``folder_paths`` module for a ComfyUI folder ``base`` (models/, input/, output/, temp/)."""
    fp = types.ModuleType("folder_paths")
    fp.base_path = str(base)
    fp.models_dir = str(base / "models")
    fp.folder_names_and_paths = {"checkpoints": ([str(base / "models" / "checkpoints")], {".safetensors"})}
    for sub in ("input", "output", "temp"):
        (base / sub).mkdir(parents=True, exist_ok=True)

    def add_model_folder_path(folder_name, full_folder_path, is_default=False):  # ComfyUI's semantics
        if folder_name in fp.folder_names_and_paths:
            paths = fp.folder_names_and_paths[folder_name][0]
            if full_folder_path in paths:
                if is_default and paths[0] != full_folder_path:
                    paths.remove(full_folder_path)
                    paths.insert(0, full_folder_path)
            elif is_default:
                paths.insert(0, full_folder_path)
            else:
                paths.append(full_folder_path)
        else:
            fp.folder_names_and_paths[folder_name] = ([full_folder_path], set())

    def filter_files_content_types(files, content_types):
        return [f for f in files if (mimetypes.guess_type(f, strict=False)[0] or "/").split("/")[0] in content_types]

    fp.add_model_folder_path = add_model_folder_path
    fp.get_folder_paths = lambda name: fp.folder_names_and_paths[name][0][:]
    fp.get_input_directory = lambda: str(base / "input")
    fp.get_output_directory = lambda: str(base / "output")
    fp.get_temp_directory = lambda: str(base / "temp")
    fp.get_annotated_filepath = lambda name, default_dir=None: os.path.join(default_dir or str(base / "input"), name)
    fp.filter_files_content_types = filter_files_content_types
    return fp


class VideoFromFile:
    """ComfyUI's ``comfy_api.input_impl.VideoFromFile``, as far as the nodes and the tests use it."""

    def __init__(self, file):
        self.file = file

    def get_stream_source(self):
        if hasattr(self.file, "seek"):
            self.file.seek(0)
        return self.file


class ExecutionBlocker:
    def __init__(self, message):
        self.message = message


def install(monkeypatch, base: Path) -> types.ModuleType:
    """Put the stand-ins in ``sys.modules`` for one test; returns the ``folder_paths`` module."""
    fp = fake_folder_paths(base)
    input_impl = types.ModuleType("comfy_api.input_impl")
    input_impl.VideoFromFile = VideoFromFile
    graph_utils = types.ModuleType("comfy_execution.graph_utils")
    graph_utils.ExecutionBlocker = ExecutionBlocker
    modules = {"folder_paths": fp, "comfy_api": types.ModuleType("comfy_api"), "comfy_api.input_impl": input_impl,
               "comfy_execution": types.ModuleType("comfy_execution"), "comfy_execution.graph_utils": graph_utils}
    for name, module in modules.items():
        monkeypatch.setitem(sys.modules, name, module)
    return fp
