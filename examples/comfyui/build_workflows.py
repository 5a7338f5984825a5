"""Write the example workflows of this folder, in ComfyUI's UI format (``NAME.json``, what you drag onto the
canvas) and API format (``NAME_api.json``, what ``POST /prompt`` takes), from the graphs below.

Every widget a node has gets its default from a running ComfyUI's ``/object_info`` unless the graph sets it,
so both files hold every input, as ComfyUI's frontend saves them. Run it against a ComfyUI with the node
pack installed::

    python examples/comfyui/build_workflows.py --url http://127.0.0.1:8188

``tests/test_comfy_server.py`` converts each UI file back to the API format the way the frontend does
(widget values in input order, links) and checks that it equals the API file, then runs the API file.
"""

from __future__ import annotations

import argparse
import json
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
MODEL = {"model": "CIDAS/clipseg-rd64-refined"}

# name -> (description, nodes); a node is (id, class_type, {input: value or ("link", node_id, output_slot)})
WORKFLOWS: dict[str, tuple[str, list[tuple[int, str, dict]]]] = {
    "mixlab_clipseg": ("mixlab's CLIPSeg node, batched: Mask (MASK), Heatmap Mask and BW Mask (IMAGE)", [
        (1, "StreamMaskLoadCLIPSeg", MODEL),
        (2, "LoadImage", {"image": "example.png"}),
        (3, "StreamMaskMixlab", {"image": ("link", 2, 0), "clipseg": ("link", 1, 0), "text": "person"}),
        (4, "MaskPreview", {"mask": ("link", 3, 0)}),
        (5, "PreviewImage", {"images": ("link", 3, 1)}),
    ]),
    "essentials_apply_clipseg": ("essentials' Apply CLIPSeg+ node, batched: mask (MASK)", [
        (1, "StreamMaskLoadCLIPSeg", MODEL),
        (2, "LoadImage", {"image": "example.png"}),
        (3, "StreamMaskEssentials", {"image": ("link", 2, 0), "clipseg": ("link", 1, 0), "prompt": "person"}),
        (4, "MaskPreview", {"mask": ("link", 3, 0)}),
    ]),
    "masquerade_mask_by_text": ("masquerade's Mask By Text node: the seed's IMAGE-typed masks, and the same as MASK", [
        (1, "StreamMaskLoadCLIPSeg", MODEL),
        (2, "LoadImage", {"image": "example.png"}),
        (3, "StreamMaskMaskByText", {"image": ("link", 2, 0), "clipseg": ("link", 1, 0), "prompt": "person|face",
                                     "model_size": "352"}),
        (4, "MaskPreview", {"mask": ("link", 3, 2)}),
        (5, "MaskPreview", {"mask": ("link", 3, 3)}),
    ]),
    "video_frames": ("a loaded video's frames (Load Video -> Get Video Components) masked with temporal smoothing, "
                     "saved as mask and heatmap videos at the source's frame rate", [
        (1, "StreamMaskLoadCLIPSeg", MODEL),
        (2, "LoadVideo", {"file": "carphone.mp4"}),
        (3, "GetVideoComponents", {"video": ("link", 2, 0)}),
        (4, "StreamMaskVideoFrames", {"images": ("link", 3, 0), "clipseg": ("link", 1, 0), "prompt": "person",
                                      "temporal": "ema"}),
        (5, "MaskToImage", {"mask": ("link", 4, 0)}),
        (6, "CreateVideo", {"images": ("link", 5, 0), "fps": ("link", 3, 2)}),
        (7, "SaveVideo", {"video": ("link", 6, 0), "filename_prefix": "streammask/frames_mask"}),
        (8, "CreateVideo", {"images": ("link", 4, 1), "fps": ("link", 3, 2), "audio": ("link", 3, 1)}),
        (9, "SaveVideo", {"video": ("link", 8, 0), "filename_prefix": "streammask/frames_heatmap"}),
    ]),
    "video_streaming": ("a whole video streamed through the model in bounded memory: mask, heatmap and matte files "
                        "in output/streammask, previewed on the node; the heatmap VIDEO saved again by Save Video", [
        (1, "StreamMaskLoadCLIPSeg", MODEL),
        (2, "LoadVideo", {"file": "carphone.mp4"}),
        (3, "StreamMaskVideo", {"video": ("link", 2, 0), "clipseg": ("link", 1, 0), "prompt": "person",
                                "out_dir": "streammask"}),
        (4, "SaveVideo", {"video": ("link", 3, 4), "filename_prefix": "streammask/streamed_heatmap"}),
    ]),
}

WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}


def is_widget(spec) -> bool:
    return isinstance(spec[0], list) or spec[0] in WIDGET_TYPES


def default_of(spec):
    opts = spec[1] if len(spec) > 1 else {}
    if "default" in opts:
        return opts["default"]
    if isinstance(spec[0], list):
        return spec[0][0]
    if spec[0] == "COMBO":
        return opts["options"][0]
    return {"INT": 0, "FLOAT": 0.0, "STRING": "", "BOOLEAN": False}[spec[0]]


def ordered_inputs(info: dict):
    """``(name, spec)`` of a node's required then optional inputs, in the server's order (no hidden ones)."""
    for group in ("required", "optional"):
        for name in info.get("input_order", {}).get(group, info["input"].get(group, {})):
            yield name, info["input"][group][name]


def build(nodes: list[tuple[int, str, dict]], object_info: dict) -> tuple[dict, dict]:
    """``(ui, api)`` workflows for one graph."""
    api, ui_nodes, links = {}, [], []
    out_links: dict[tuple[int, int], list[int]] = {}
    depth: dict[int, int] = {}
    for node_id, cls, given in nodes:  # nodes are listed after the nodes they read from
        depth[node_id] = 1 + max((depth[v[1]] for v in given.values() if isinstance(v, tuple)), default=-1)
    rows: dict[int, int] = {}
    for order, (node_id, cls, given) in enumerate(nodes):
        info = object_info[cls]
        unknown = set(given) - {name for name, _ in ordered_inputs(info)}
        if unknown:
            raise SystemExit(f"{cls} has no inputs {sorted(unknown)}")
        inputs, ui_inputs, widgets = {}, [], []
        for name, spec in ordered_inputs(info):
            value = given.get(name)
            linked = isinstance(value, tuple)
            if is_widget(spec):
                widgets.append(default_of(spec) if value is None or linked else value)
                inputs[name] = [str(value[1]), value[2]] if linked else (default_of(spec) if value is None else value)
            elif linked:
                inputs[name] = [str(value[1]), value[2]]
            if linked:
                link_id = len(links) + 1
                src, slot = value[1], value[2]
                links.append([link_id, src, slot, node_id, len(ui_inputs),
                              object_info[next(c for i, c, _ in nodes if i == src)]["output"][slot]])
                out_links.setdefault((src, slot), []).append(link_id)
                entry = {"name": name, "type": "COMBO" if isinstance(spec[0], list) else spec[0], "link": link_id}
                if is_widget(spec):
                    entry["widget"] = {"name": name}
                ui_inputs.append(entry)
            elif not is_widget(spec):
                ui_inputs.append({"name": name, "type": spec[0], "link": None})
        api[str(node_id)] = {"class_type": cls, "inputs": inputs, "_meta": {"title": info["display_name"]}}
        row = rows.get(depth[node_id], 0)
        rows[depth[node_id]] = row + 1
        ui_nodes.append({
            "id": node_id, "type": cls, "pos": [40 + 420 * depth[node_id], 40 + 360 * row], "size": [380, 300],
            "flags": {}, "order": order, "mode": 0, "inputs": ui_inputs,
            "outputs": [{"name": n, "type": t, "links": [], "slot_index": i}
                        for i, (n, t) in enumerate(zip(info["output_name"], info["output"]))],
            "properties": {"Node name for S&R": cls}, "widgets_values": widgets,
        })
    for node in ui_nodes:
        for out in node["outputs"]:
            out["links"] = out_links.get((node["id"], out["slot_index"]), [])
    ui = {"last_node_id": max(n["id"] for n in ui_nodes), "last_link_id": len(links), "nodes": ui_nodes,
          "links": links, "groups": [], "config": {}, "extra": {"ds": {"scale": 1, "offset": [0, 0]}}, "version": 0.4}
    return ui, api


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default="http://127.0.0.1:8188", help="a running ComfyUI with the node pack")
    parser.add_argument("--out", type=Path, default=HERE)
    args = parser.parse_args()
    with urllib.request.urlopen(f"{args.url}/object_info", timeout=30) as r:
        object_info = json.load(r)
    for name, (description, nodes) in WORKFLOWS.items():
        ui, api = build(nodes, object_info)
        ui["extra"]["streammask"] = description
        (args.out / f"{name}.json").write_text(json.dumps(ui, indent=1) + "\n")
        (args.out / f"{name}_api.json").write_text(json.dumps(api, indent=1) + "\n")
        print(f"wrote {name}.json and {name}_api.json")


if __name__ == "__main__":
    main()
