"""The node pack inside a real ComfyUI 0.3.64 server, installed and used as a ComfyUI user does.

The server comes from ``../shared/comfyui/ComfyUI-v0.3.64.tar.gz`` (``STREAMMASK_COMFYUI_ARCHIVE``), extracted into a
temporary folder; the pack is installed the ComfyUI-Manager way: ``git clone`` of this repository into
``custom_nodes/streammask`` and ``pip install -r requirements.txt`` with the server's Python. That Python
(``STREAMMASK_COMFYUI_PYTHON``, default: this one) must have ComfyUI's own requirements (``.ci/run`` makes
``.venv-tv``: torch 2.14.1, torchvision 0.29.1, ComfyUI's requirements.txt less torch/torchvision/torchaudio).
The model is a small random-weight CLIPSeg in a folder that ``extra_model_paths.yaml`` adds. The server
is started from another working directory (as the Windows portable build is), on 127.0.0.1 only; every
request loop is bounded in time.

Skips, with the reason, where the archive, git or ComfyUI's requirements are missing (a clone outside this
workplace; the main suite's venv); with ``STREAMMASK_COMFYUI_REQUIRED=1`` (``.ci/run``) those are failures.
The clone is of the committed ``HEAD``: commit before running this.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples" / "comfyui"
ARCHIVE = Path(os.environ.get("STREAMMASK_COMFYUI_ARCHIVE",
                              REPO.parent / "shared" / "comfyui" / "ComfyUI-v0.3.64.tar.gz"))
PYTHON = os.environ.get("STREAMMASK_COMFYUI_PYTHON", sys.executable)
REQUIRED = os.environ.get("STREAMMASK_COMFYUI_REQUIRED", "") not in ("", "0")
COMFY_IMPORTS = ("aiohttp", "yaml", "sqlalchemy", "alembic", "comfyui_frontend_package", "torchvision", "torchsde",
                 "einops", "spandrel", "pydantic_settings", "requests", "av", "scipy", "psutil")
CARPHONE = REPO / "examples" / "carphone.mp4"  # 176x144, 120 frames at 30000/1001
LONG_FRAMES = 4000
NODES = ("StreamMaskLoadCLIPSeg", "StreamMaskMixlab", "StreamMaskEssentials", "StreamMaskMaskByText",
         "StreamMaskVideoFrames", "StreamMaskVideo")


def unavailable(reason: str):
    if REQUIRED:
        pytest.fail(f"STREAMMASK_COMFYUI_REQUIRED is set but {reason}")
    pytest.skip(reason)


def _missing_requirements() -> list[str]:
    code = ("import importlib.util, sys; print(' '.join(m for m in sys.argv[1:] "
            "if importlib.util.find_spec(m) is None))")
    r = subprocess.run([PYTHON, "-c", code, *COMFY_IMPORTS], capture_output=True, text=True, timeout=60)
    return r.stdout.split() if r.returncode == 0 else list(COMFY_IMPORTS)


class Server:
    """A running ComfyUI: its folder, its URL and its log."""

    def __init__(self, root: Path, port: int, proc: subprocess.Popen, log: Path) -> None:
        self.root, self.url, self.proc, self.log = root, f"http://127.0.0.1:{port}", proc, log

    def get(self, path: str):
        with urllib.request.urlopen(self.url + path, timeout=30) as r:
            return json.load(r)

    def post(self, path: str, data: dict | None = None):
        req = urllib.request.Request(self.url + path, data=json.dumps(data or {}).encode(),
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=30) as r:
            body = r.read()
        return json.loads(body) if body.strip() else None

    def queue(self, workflow: dict) -> str:
        try:
            return self.post("/prompt", {"prompt": workflow, "client_id": str(uuid.uuid4())})["prompt_id"]
        except urllib.error.HTTPError as exc:  # the server's validation errors, for the assertion message
            raise AssertionError(f"POST /prompt refused: {exc.read().decode()[:3000]}") from None

    def wait(self, prompt_id: str, timeout: float = 300) -> dict:
        """The prompt's /history entry once it finished (success or error), within ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            entry = self.get(f"/history/{prompt_id}").get(prompt_id)
            if entry is not None and entry.get("status", {}).get("completed") is not None:
                return entry
            assert self.proc.poll() is None, f"the server exited: {self.log.read_text()[-3000:]}"
            time.sleep(0.5)
        raise AssertionError(f"prompt {prompt_id} did not finish within {timeout} s")

    def run(self, workflow: dict, timeout: float = 300) -> dict:
        entry = self.wait(self.queue(workflow), timeout)
        assert entry["status"]["status_str"] == "success", json.dumps(entry["status"]["messages"])[-3000:]
        return entry

    def file(self, item: dict) -> Path:
        """The file a history output entry (``filename``, ``subfolder``, ``type``) names."""
        return self.root / item["type"] / item["subfolder"] / item["filename"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    if not ARCHIVE.is_file():
        unavailable(f"no ComfyUI archive at {ARCHIVE} (shared/comfyui/ of this workplace)")
    if shutil.which("git") is None or not (REPO / ".git").exists():
        unavailable("needs git and a git checkout of the repository (the pack is installed with git clone)")
    missing = _missing_requirements()
    if missing:
        unavailable(f"ComfyUI's requirements are not installed in {PYTHON} (missing {', '.join(missing)}); "
                    ".ci/run runs this test in .venv-tv")
    tmp = tmp_path_factory.mktemp("comfyui")
    with tarfile.open(ARCHIVE) as tar:
        tar.extractall(tmp, filter="data")
    root = tmp / "ComfyUI"
    # the ComfyUI-Manager install: git clone, then the pack's requirements.txt with the server's Python
    pack = root / "custom_nodes" / "streammask"
    subprocess.run(["git", "clone", "-q", str(REPO), str(pack)], check=True, timeout=120)
    pip = subprocess.run([PYTHON, "-m", "pip", "install", "-q", "-r", str(pack / "requirements.txt")],
                         capture_output=True, text=True, timeout=900)
    assert pip.returncode == 0, pip.stderr[-3000:]
    # the model: a random-weight CLIPSeg in a folder extra_model_paths.yaml adds under the name "clipseg"
    shared = tmp / "shared-models"
    build = subprocess.run([PYTHON, "-c", "import sys; sys.path.insert(0, sys.argv[1]); "
                            "from streammask.testing import save_random_clipseg; save_random_clipseg(sys.argv[2])",
                            str(pack), str(shared / "clipseg" / "tiny")], capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, build.stderr[-3000:]
    (root / "extra_model_paths.yaml").write_text(f"streammask_test:\n  base_path: {shared}\n  clipseg: clipseg\n")
    shutil.copy(CARPHONE, root / "input" / "carphone.mp4")
    _write_long_clip(root / "input" / "long.mp4")
    port = _free_port()
    log = tmp / "server.log"
    elsewhere = tmp / "cwd"  # started from another folder, as the Windows portable build is
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["HF_HUB_OFFLINE"] = "1"
    with open(log, "w") as out:
        proc = subprocess.Popen([PYTHON, str(root / "main.py"), "--cpu", "--listen", "127.0.0.1", "--port", str(port)],
                                cwd=elsewhere, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    srv = Server(root, port, proc, log)
    try:
        deadline = time.monotonic() + 180
        while True:
            assert proc.poll() is None, f"ComfyUI exited at start-up: {log.read_text()[-3000:]}"
            try:
                srv.get("/object_info/StreamMaskLoadCLIPSeg")
                break
            except (urllib.error.URLError, ConnectionError, OSError):
                if time.monotonic() > deadline:
                    raise AssertionError(f"ComfyUI did not answer within 180 s: {log.read_text()[-3000:]}") from None
                time.sleep(0.5)
        yield srv
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=20)


def _write_long_clip(path: Path) -> None:
    """A small clip long enough that its run is still going when the test interrupts it."""
    import av
    import numpy as np

    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=30)
        s.width, s.height, s.pix_fmt = 64, 48, "yuv420p"
        for i in range(LONG_FRAMES):
            img = np.zeros((48, 64, 3), np.uint8)
            img[:, (i % 48):(i % 48) + 16] = 255
            for packet in s.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                c.mux(packet)
        for packet in s.encode(None):
            c.mux(packet)


def example(name: str, *, model: str = "tiny") -> dict:
    workflow = json.loads((EXAMPLES / f"{name}_api.json").read_text())
    for node in workflow.values():
        if node["class_type"] == "StreamMaskLoadCLIPSeg":
            node["inputs"]["model"] = model  # the examples name the hub id; the test has no network
    return workflow


def video_facts(path: Path) -> tuple[int, int, int]:
    import av

    with av.open(str(path)) as c:
        frames = list(c.decode(video=0))
    return len(frames), frames[0].width, frames[0].height


def image_size(path: Path) -> tuple[int, int]:
    from PIL import Image

    with Image.open(path) as im:
        return im.size


# -- the pack as loaded ----------------------------------------------------------------------

def test_nodes_load_from_the_clone(server):
    info = server.get("/object_info")
    for name in NODES:
        assert info[name]["python_module"] == "custom_nodes.streammask", name
        assert info[name]["category"].startswith("mask/segmentation")
    log = server.log.read_text()
    assert "IMPORT FAILED" not in "".join(line for line in log.splitlines() if "streammask" in line), log[-3000:]
    # the package comes from the clone (git pull updates it), whatever else the server's Python has installed
    assert f"streammask nodes: the streammask package in {server.root / 'custom_nodes' / 'streammask' / 'streammask'}" \
        in log, log[-3000:]
    # the model list: the hub ids (CLIPSeg, SAM 3) and the model found in the folder extra_model_paths.yaml adds
    choices = info["StreamMaskLoadCLIPSeg"]["input"]["required"]["model"][0]
    assert choices == ["CIDAS/clipseg-rd64-refined", "facebook/sam3", "tiny"]
    assert (server.root / "models" / "clipseg").is_dir()  # where users put models, created by the pack
    picker = info["StreamMaskVideo"]["input"]["required"]["video_file"]
    assert picker[0] == ["none", "carphone.mp4", "long.mp4"] and picker[1]["video_upload"] is True
    # new outputs are appended (saved workflows link outputs by index): the SAM 3 sidecar's path last
    assert info["StreamMaskVideo"]["output"] == ["STRING", "STRING", "STRING", "VIDEO", "VIDEO", "VIDEO", "STRING"]
    optional = info["StreamMaskVideo"]["input"]["optional"]
    assert optional["instances"][0] == ["union", "separate"] and optional["refine"][0] == ["none", "guided"]
    assert info["StreamMaskMaskByText"]["output"] == ["IMAGE", "IMAGE", "MASK", "MASK"]


# -- the example workflows ---------------------------------------------------------------------

EXAMPLE_NAMES = sorted(p.name[:-len("_api.json")] for p in EXAMPLES.glob("*_api.json"))
WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}


def ui_to_api(ui: dict, object_info: dict) -> dict:
    """A UI-format workflow as ComfyUI's frontend queues it: each node's widget values in the order of its
    widget inputs (required, then optional), a connected input as ``[node id, output slot]``."""
    links = {link[0]: link for link in ui["links"]}
    api = {}
    for node in ui["nodes"]:
        info = object_info[node["type"]]
        connected = {i["name"]: i.get("link") for i in node.get("inputs", [])}
        values = iter(node.get("widgets_values", []))
        inputs = {}
        for group in ("required", "optional"):
            for name in info["input_order"].get(group, []):
                spec = info["input"][group][name]
                if isinstance(spec[0], list) or spec[0] in WIDGET_TYPES:
                    inputs[name] = next(values)
                if connected.get(name) is not None:
                    link = links[connected[name]]
                    inputs[name] = [str(link[1]), link[2]]
        api[str(node["id"])] = {"class_type": node["type"], "inputs": inputs}
    return api


@pytest.mark.parametrize("name", EXAMPLE_NAMES)
def test_example_ui_workflow_is_the_api_workflow(server, name):
    info = server.get("/object_info")
    ui = json.loads((EXAMPLES / f"{name}.json").read_text())
    api = json.loads((EXAMPLES / f"{name}_api.json").read_text())
    assert ui_to_api(ui, info) == {k: {"class_type": v["class_type"], "inputs": v["inputs"]} for k, v in api.items()}


def _chromium() -> str | None:
    return next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)), None)


def test_example_ui_workflows_in_the_real_frontend(server, tmp_path):
    """Each UI-format example loaded into ComfyUI's own frontend (headless Chromium, driven over the DevTools
    protocol on 127.0.0.1): the prompt the frontend builds from it (``app.graphToPrompt``) is the API file."""
    import asyncio
    import re

    browser = _chromium()
    if browser is None:
        pytest.skip("no Chromium on this machine (.ci/run installs it with apt)")
    aiohttp = pytest.importorskip("aiohttp")  # one of ComfyUI's requirements
    proc = subprocess.Popen([browser, "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
                             "--remote-debugging-address=127.0.0.1", "--remote-debugging-port=0",
                             f"--user-data-dir={tmp_path / 'profile'}", "about:blank"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True)

    async def frontend_prompts() -> dict[str, dict]:
        port = None
        deadline = time.monotonic() + 60
        while port is None:  # "DevTools listening on ws://127.0.0.1:PORT/devtools/browser/..."
            assert time.monotonic() < deadline and proc.poll() is None, "Chromium did not start"
            line = await asyncio.to_thread(proc.stderr.readline)
            m = re.search(r"ws://127\.0\.0\.1:(\d+)/", line)
            port = m and int(m.group(1))
        async with aiohttp.ClientSession() as session:
            async with session.get(f"http://127.0.0.1:{port}/json", timeout=aiohttp.ClientTimeout(total=30)) as r:
                page = next(t for t in await r.json() if t["type"] == "page")
            async with session.ws_connect(page["webSocketDebuggerUrl"], max_msg_size=0) as ws:
                ids = iter(range(1, 10**6))

                async def evaluate(expression: str):
                    my = next(ids)
                    await ws.send_json({"id": my, "method": "Runtime.evaluate", "params": {
                        "expression": expression, "awaitPromise": True, "returnByValue": True}})
                    while True:
                        data = json.loads((await asyncio.wait_for(ws.receive(), 60)).data)
                        if data.get("id") == my:
                            result = data["result"]
                            assert "exceptionDetails" not in result, json.dumps(result)[:3000]
                            return result["result"].get("value")

                await ws.send_json({"id": 0, "method": "Page.navigate", "params": {"url": server.url + "/"}})
                deadline = time.monotonic() + 120
                while not await evaluate("!!(window.app && window.app.graph && window.app.graphToPrompt)"):
                    assert time.monotonic() < deadline, "ComfyUI's frontend did not load within 120 s"
                    await asyncio.sleep(0.5)
                prompts = {}
                for name in EXAMPLE_NAMES:
                    ui = (EXAMPLES / f"{name}.json").read_text()
                    prompts[name] = json.loads(await evaluate(
                        f"(async () => {{ await app.loadGraphData({ui}); "
                        "return JSON.stringify((await app.graphToPrompt()).output); })()"))
                return prompts

    try:
        prompts = asyncio.run(asyncio.wait_for(frontend_prompts(), 300))
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
    for name in EXAMPLE_NAMES:
        api = json.loads((EXAMPLES / f"{name}_api.json").read_text())
        assert {k: (v["class_type"], v["inputs"]) for k, v in prompts[name].items()} == \
            {k: (v["class_type"], v["inputs"]) for k, v in api.items()}, name


def _check_mixlab(server, outputs):
    for node in ("4", "5"):  # Mask (MaskPreview), Heatmap Mask (PreviewImage): one image of the input's size
        (item,) = outputs[node]["images"]
        assert image_size(server.file(item)) == image_size(server.root / "input" / "example.png")


def _check_essentials(server, outputs):
    (item,) = outputs["4"]["images"]
    assert image_size(server.file(item)) == image_size(server.root / "input" / "example.png")


def _check_masquerade(server, outputs):
    for node in ("4", "5"):  # the MASK outputs, which core mask nodes take
        (item,) = outputs[node]["images"]
        assert image_size(server.file(item)) == image_size(server.root / "input" / "example.png")


def _check_video_frames(server, outputs):
    for node in ("7", "9"):  # Save Video of the mask and of the heatmap: every frame of the source
        (item,) = outputs[node]["images"]
        assert video_facts(server.file(item)) == (120, 176, 144)


def _check_video_streaming(server, outputs):
    shown = outputs["3"]["images"]  # the node's own preview: the heatmap and mask files it wrote
    assert [i["filename"] for i in shown] == ["carphone.soft.heatmap.mp4", "carphone.soft.mask.mp4"]
    assert outputs["3"]["animated"] == [True]
    for item in shown:
        assert video_facts(server.file(item)) == (120, 176, 144)
    assert video_facts(server.root / "output" / "streammask" / "carphone.soft.matte.mov") == (120, 176, 144)
    (saved,) = outputs["4"]["images"]  # the heatmap VIDEO output through core Save Video
    assert video_facts(server.file(saved)) == (120, 176, 144)


CHECKS = {"mixlab_clipseg": _check_mixlab, "essentials_apply_clipseg": _check_essentials,
          "masquerade_mask_by_text": _check_masquerade, "video_frames": _check_video_frames,
          "video_streaming": _check_video_streaming}


def test_every_example_is_checked():
    assert sorted(CHECKS) == EXAMPLE_NAMES


@pytest.mark.parametrize("name", EXAMPLE_NAMES)
def test_example_runs(server, name):
    entry = server.run(example(name))
    CHECKS[name](server, entry["outputs"])


def test_streaming_node_reruns_when_an_output_is_gone(server):
    workflow = example("video_streaming")
    workflow["3"]["inputs"].update(out_dir="streammask-cache", outputs="mask,heatmap", max_frames=10)
    first = server.run(workflow)
    heatmap = server.file(first["outputs"]["3"]["images"][0])
    assert heatmap.exists()

    def cached(entry) -> list[str]:
        return next((data["nodes"] for event, data in entry["status"]["messages"] if event == "execution_cached"), [])

    again = server.run(workflow)
    assert "3" in cached(again)  # nothing changed: ComfyUI's cache answers
    heatmap.unlink()  # the user deletes an output: the node runs again instead of returning the cached paths
    third = server.run(workflow)
    assert "3" not in cached(third) and heatmap.exists() and video_facts(heatmap)[0] == 10


def test_relative_model_path_and_messages_in_node_words(server):
    # a relative path is resolved in ComfyUI's folder, not in the server's working directory
    link = server.root / "models" / "clipseg" / "tiny-link"
    if not link.exists():
        link.symlink_to(server.root.parent / "shared-models" / "clipseg" / "tiny", target_is_directory=True)
    workflow = example("essentials_apply_clipseg")
    workflow["1"]["inputs"]["model_path"] = "models/clipseg/tiny-link"
    server.run(workflow)
    workflow["1"]["inputs"]["model_path"] = "models/clipseg/missing"
    entry = server.wait(server.queue(workflow), 120)
    assert entry["status"]["status_str"] == "error"
    error = next(data for event, data in entry["status"]["messages"] if event == "execution_error")
    assert error["node_id"] == "1" and error["exception_message"].startswith(
        "model_path 'models/clipseg/missing' is neither a folder")
    assert "--" not in error["exception_message"]


def test_interrupt_leaves_no_partial_file(server):
    workflow = example("video_streaming")
    del workflow["4"]  # no Save Video: the node alone, on the long clip from the file picker
    del workflow["3"]["inputs"]["video"]
    del workflow["2"]
    workflow["3"]["inputs"].update(video_file="long.mp4", out_dir="streammask-long")
    out = server.root / "output" / "streammask-long"
    prompt_id = server.queue(workflow)
    deadline = time.monotonic() + 180
    while not (out.is_dir() and any(".partial" in p.name for p in out.iterdir())):  # the run has started writing
        assert time.monotonic() < deadline, "the long run never started writing"
        assert server.get(f"/history/{prompt_id}").get(prompt_id) is None, "the long run ended before the interrupt"
        time.sleep(0.2)
    server.post("/interrupt")
    entry = server.wait(prompt_id, 60)
    assert entry["status"]["status_str"] == "error"
    assert any(event == "execution_interrupted" for event, _ in entry["status"]["messages"])
    # neither partial files nor files that look finished; the run created the folder, so it removed it too
    assert not out.exists() or sorted(p.name for p in out.iterdir()) == []
