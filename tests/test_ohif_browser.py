"""OHIF in a real browser (issue 21): the OHIF v3 viewer bundled with MONAI Label, driven by Playwright
in Debian's headless ``chromium`` (no browser download: ``executable_path``), against Orthanc with
the phantom CT study and the app on loopback.

As a user does: open ``<app>/ohif/``, open the study from the study list in the *MONAI Label* mode,
type the test server's URL into the panel and connect, then

* *Class Prompts*: tick "tumor", *Run*;
* *Auto-Segmentation*: *Run* with the options as shown — the first click a user makes (OHIF sends
  no ``prompt`` then; the server segments the vocabulary's labels);

and check that the segmentation arrives and is shown: the infer response is 200 with an NRRD label,
OHIF's success notification, the segments in OHIF's labelmap hold as many voxels as the server
returned for their labels, the MONAI Label panel lists them with their colour, and the axial
viewport's pixels change, towards the segment's colour, where the segment is drawn. Screenshots are
kept in ``test-artifacts/ohif/`` beside the tests (printed).

The server runs with a two-label vocabulary (``left lung``, ``tumor``, taken from the default one) so
that Auto-Segmentation's "every label" stays about a minute on a CPU (the default vocabulary's eight
labels take about six minutes on two cores). Every wait is bounded.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
import requests

from servers import ROOT, monailabel_server, orthanc_available, orthanc_server

SERIES = ROOT / "sample-data" / "phantoms" / "ct_chest"
VOCABULARY = ROOT / "lib" / "medclipsam" / "configs" / "vocabulary" / "default.json"
ARTIFACTS = ROOT / "test-artifacts" / "ohif"
CHROMIUM = shutil.which("chromium") or ("/usr/bin/chromium" if os.path.exists("/usr/bin/chromium") else None)
LABELS = ("left lung", "tumor")
INFER_TIMEOUT_MS = 480_000          # one CPU inference of the phantom (model loading included)
UI_TIMEOUT_MS = 60_000


def _why_not() -> str | None:
    if CHROMIUM is None:
        return "chromium is not installed (Debian: apt-get install chromium; .ci/run does it)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "playwright is not installed (pip install -e '.[test]')"
    return orthanc_available()


pytestmark = [pytest.mark.filterwarnings("ignore::UserWarning"),
              pytest.mark.skipif(_why_not() is not None, reason=str(_why_not()))]


@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    root = tmp_path_factory.mktemp("ohif")
    vocab = json.loads(VOCABULARY.read_text())
    vocab["labels"] = [e for e in vocab["labels"] if e["name"] in LABELS]
    assert [e["name"] for e in vocab["labels"]] == list(LABELS)
    (root / "vocabulary.json").write_text(json.dumps(vocab))
    with orthanc_server(root / "orthanc") as orthanc:
        for f in sorted(SERIES.iterdir()):
            if f.is_file():
                r = requests.post(f"{orthanc}/instances", data=f.read_bytes(), timeout=30)
                assert r.status_code == 200, r.text
        with monailabel_server(f"{orthanc}/dicom-web", root / "work",
                               conf={"vocabulary": str(root / "vocabulary.json")},
                               env={"MONAI_LABEL_DICOMWEB_CACHE_PATH": str(root / "cache")}) as url:
            yield url, root


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, timeout=UI_TIMEOUT_MS,
                              args=["--no-sandbox", "--use-gl=swiftshader", "--enable-unsafe-swiftshader",
                                    "--ignore-gpu-blocklist"])
        try:
            yield b
        finally:
            b.close()


class Viewer:
    """One OHIF session (a fresh browser context: no cookies, no segmentation) on the phantom study."""

    def __init__(self, browser, url: str, name: str):
        self.url, self.name = url, name
        self.context = browser.new_context(viewport={"width": 1600, "height": 1000})
        self.context.set_default_timeout(UI_TIMEOUT_MS)
        self.page = self.context.new_page()
        self.errors: list[str] = []
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        # offline: only loopback (OHIF asks Google for fonts)
        self.page.route("**/*", lambda r: r.continue_() if r.request.url.startswith(
            ("http://127.0.0.1", "data:", "blob:")) else r.abort())
        ARTIFACTS.mkdir(parents=True, exist_ok=True)

    def open_study_and_connect(self) -> None:
        pg = self.page
        pg.goto(f"{self.url}/ohif/")
        pg.get_by_text("Phantom, Synthetic", exact=True).first.click()          # the study list row
        pg.get_by_role("button", name="MONAI Label").click()                     # the mode
        pg.get_by_role("button", name="Confirm and Hide").click()                # the "investigational use" banner
        pg.locator("[data-viewport-uid=mpr-axial] canvas").first.wait_for()
        field = pg.locator("#monailabelServerURL")
        field.fill(f"{self.url}/")
        field.blur()
        with pg.expect_response(lambda r: r.url.startswith(self.url) and "/info/" in r.url) as info:
            pg.locator(".settingsTable button.actionButton").click()
        assert info.value.status == 200
        pg.get_by_text("Connected to MONAI Label - Successful").wait_for()
        self.wait_for_labelmap()

    def wait_for_labelmap(self) -> None:
        t0 = time.time()
        while self.labelmap() is None:
            assert time.time() - t0 < UI_TIMEOUT_MS / 1000, "OHIF created no labelmap after connecting"
            self.page.wait_for_timeout(500)

    def labelmap(self) -> dict | None:
        """OHIF's segmentation '1' (made at connect from /info/'s labels): {label: (segment index, voxels)}."""
        return self.page.evaluate("""() => {
            const s = window.services && window.services.segmentationService;
            const vol = s && s.getLabelmapVolume('1');
            if (!vol || !vol.voxelManager) return null;
            const seg = s.getSegmentation('1');
            const data = vol.voxelManager.getCompleteScalarDataArray();
            const counts = {};
            for (let i = 0; i < data.length; i++) if (data[i]) counts[data[i]] = (counts[data[i]] || 0) + 1;
            const out = {};
            for (const [idx, segment] of Object.entries(seg.segments))
                if (segment) out[segment.label] = [Number(idx), counts[idx] || 0];
            return out;
        }""")

    def tab(self, title: str):
        self.page.get_by_text(title, exact=True).click()
        return self.page.locator("div.tab").filter(has=self.page.locator("label.tab-label", has_text=title))

    def swatch(self, label: str) -> tuple[int, int, int]:
        """The colour the Class Prompts list shows for a segment (black while it has none)."""
        tab = self.page.locator("div.tab").filter(has=self.page.locator("label.tab-label", has_text="Class Prompts"))
        row = tab.locator("table.optionsTable tr", has=self.page.get_by_text(label, exact=True))
        css = row.locator("span.segColor").evaluate("e => getComputedStyle(e).backgroundColor")
        return tuple(int(x) for x in re.findall(r"\d+", css)[:3])

    def viewport(self, tag: str) -> np.ndarray:
        from PIL import Image

        path = ARTIFACTS / f"{self.name}-{tag}.png"
        self.page.locator("[data-viewport-uid=mpr-axial]").screenshot(path=str(path))
        return np.asarray(Image.open(path).convert("RGB")).astype(int)

    def settled_viewport(self, tag: str, differs_from: np.ndarray | None = None) -> np.ndarray:
        """The axial viewport once two screenshots 0.5 s apart agree (and, if given, differ from
        ``differs_from``); bounded."""
        t0, last = time.time(), None
        while True:
            img = self.viewport(tag)
            if last is not None and np.array_equal(img, last) and (
                    differs_from is None or not np.array_equal(img, differs_from)):
                return img
            if time.time() - t0 > 30:
                return img
            last = img
            self.page.wait_for_timeout(500)

    def run(self, tab_title: str):
        """*Run* in a tab; returns the infer response (bounded by the CPU inference time)."""
        tab = self.tab(tab_title)
        with self.page.expect_response(lambda r: "/infer/" in r.url, timeout=INFER_TIMEOUT_MS) as rr:
            tab.get_by_role("button", name="Run").click()
        return rr.value

    def close(self) -> None:
        self.page.screenshot(path=str(ARTIFACTS / f"{self.name}-page.png"))
        print(f"OHIF screenshots: {ARTIFACTS}/{self.name}-*.png")
        self.context.close()


def _label_counts(body: bytes, tmp_path: Path) -> dict[int, int]:
    from medclipsam.volume.itk_io import read_volume

    path = tmp_path / "ohif_response.nrrd"
    path.write_bytes(body)
    values, counts = np.unique(read_volume(path).array, return_counts=True)
    return {int(v): int(c) for v, c in zip(values, counts) if v}


def _check_overlay(before: np.ndarray, after: np.ndarray, colours: list[tuple[int, int, int]], what: str,
                   max_fraction: float) -> None:
    """The viewport changed where the segments are drawn, towards (one of) the segments' colours."""
    assert before.shape == after.shape
    changed = np.abs(after - before).sum(-1) > 40
    n = int(changed.sum())
    assert n >= 100, f"{what}: the axial viewport barely changed ({n} pixels): no overlay shown"
    assert n <= max_fraction * changed.size, f"{what}: {n} of {changed.size} pixels changed: not one segment"
    a, b = after[changed], before[changed]
    closer = np.zeros(n, dtype=bool)
    for c in np.array(colours):
        closer |= np.linalg.norm(a - c, axis=1) < np.linalg.norm(b - c, axis=1)
    assert closer.mean() > 0.8, (f"{what}: only {closer.mean():.0%} of the changed pixels moved towards the "
                                 f"segment colours {colours}")


def test_class_prompts_tumor_is_segmented_and_shown(servers, browser, tmp_path):
    url, _ = servers
    v = Viewer(browser, url, "class-prompts-tumor")
    try:
        v.open_study_and_connect()
        before_map = v.labelmap()
        assert set(LABELS) <= set(before_map) and all(n == 0 for _, n in before_map.values())
        before = v.settled_viewport("before")
        tab = v.tab("Class Prompts")
        tab.locator("table.optionsTable tr", has=v.page.get_by_text("tumor", exact=True)).locator(
            "input[type=checkbox]").check()
        t0 = time.time()
        r = v.run("Class Prompts")
        print(f"Class Prompts 'tumor': HTTP {r.status} after {time.time() - t0:.0f} s")
        assert r.status == 200, r.text()[:500]
        v.page.get_by_text("Run Class Based Inference - Successful").wait_for(timeout=20_000)   # shown for 4 s
        sent = json.loads(re.search(rb'name="params"\r\n\r\n(.*?)\r\n', r.request.post_data_buffer, re.S).group(1))
        info = requests.get(f"{url}/info/", timeout=30).json()["models"]["medclipsam"]["labels"]
        assert sent["label_prompt"] == [info["tumor"]] and "prompt" not in sent
        returned = _label_counts(r.body(), tmp_path)
        assert set(returned) == {info["tumor"]} and returned[info["tumor"]] > 50, returned
        after = v.settled_viewport("after", differs_from=before)
        shown = v.labelmap()
        assert shown["tumor"][1] == returned[info["tumor"]], (shown, returned)    # every voxel arrived
        assert all(n == 0 for name, (_, n) in shown.items() if name != "tumor"), shown
        colour = v.swatch("tumor")
        assert colour != (0, 0, 0), "the panel lists no colour for the tumor segment"
        _check_overlay(before, after, [colour], "tumor", max_fraction=0.03)
        assert not v.errors, v.errors
    finally:
        v.close()


def test_auto_segmentation_first_click_with_the_options_as_shown(servers, browser, tmp_path):
    url, root = servers
    v = Viewer(browser, url, "auto-segmentation")
    try:
        v.open_study_and_connect()
        before = v.settled_viewport("before")
        t0 = time.time()
        r = v.run("Auto-Segmentation")                        # nothing typed, nothing edited
        print(f"Auto-Segmentation (no option edited): HTTP {r.status} after {time.time() - t0:.0f} s")
        sent = json.loads(re.search(rb'name="params"\r\n\r\n(.*?)\r\n', r.request.post_data_buffer, re.S).group(1))
        assert "prompt" not in sent and "label_prompt" not in sent, sent        # what OHIF sends
        assert r.status == 200, r.text()[:500]
        v.page.get_by_text("Running Segmentation - Successful").wait_for(timeout=20_000)       # shown for 4 s
        assert v.page.get_by_text("Failed to Run Segmentation").count() == 0
        info = requests.get(f"{url}/info/", timeout=30).json()["models"]["medclipsam"]["labels"]
        returned = _label_counts(r.body(), tmp_path)
        assert set(returned) == {info[name] for name in LABELS}, returned      # both labels are in the phantom
        after = v.settled_viewport("after", differs_from=before)
        shown = v.labelmap()
        for name in LABELS:
            assert shown[name][1] == returned[info[name]], (name, shown, returned)
        # the left lung fills much of the axial slice; the tumour sits inside the right lung
        colours = [v.swatch(name) for name in LABELS]
        assert (0, 0, 0) not in colours, colours
        _check_overlay(before, after, colours, "left lung + tumor", max_fraction=0.2)
        log = (root / "work" / "monailabel.log").read_text()
        assert "names no target" in log                     # the server says why it segmented the vocabulary
        assert not v.errors, v.errors
    finally:
        v.close()
