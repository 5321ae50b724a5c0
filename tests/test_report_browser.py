"""The HTML eval report as a reader sees it: rendered in headless Chromium, offline, from synthetic results.

The string checks of test_eval_report.py cannot tell whether the page loads its images, where the prompts
land or whether the browser smooths the pixels; this does."""

import io

import numpy as np
from PIL import Image, ImageDraw

from pluralign.eval.report import write_reports
from pluralign.eval.results import build_results
from pluralign.eval.suite import EvalRow

ATTRS = ["blurry", "muted", "underexposed"]
WEIGHTS = [0.0, 0.5, 1.0]


def _rate(v):
    return {"value": v, "ci95": [max(0.0, v - 0.15), min(1.0, v + 0.1)], "n": 8}


def _variant(weight, adherence):
    return {"kind": "base" if weight is None else "adapter", "weight": weight,
            "adherence": {**_rate(adherence), "by_attribute": {a: _rate(adherence * (1 - 0.2 * k)) for k, a in enumerate(ATTRS)},
                          "by_category": {"clarity_and_focus": _rate(adherence), "color_and_tone": _rate(adherence / 2)}},
            "leakage": None if weight is None else {"by_attribute": {}, "max_abs_points": 2.0 * weight},
            "content_fidelity": _rate(0.9)}


def _image(seed: int) -> Image.Image:
    """A 32 px scene with hard edges, so smoothing would show as new colours."""
    rng = np.random.default_rng(seed)
    im = Image.new("RGB", (32, 32), tuple(int(c) for c in rng.integers(0, 255, 3)))
    x, y = (int(c) for c in rng.integers(2, 18, 2))
    ImageDraw.Draw(im).rectangle([x, y, x + 11, y + 11], fill=tuple(int(c) for c in rng.integers(0, 255, 3)))
    return im


def _report(tmp_path):
    variants = {"base": _variant(None, 0.2), **{f"adapter@{w:g}": _variant(w, 0.2 + 0.6 * w) for w in WEIGHTS}}
    results = build_results(config={}, suite={"source": "synthetic", "n_rows": 9}, variants=variants, reference="base",
                            checks={}, timing={}, wall_seconds=1.0)
    rows = [EvalRow(f"a red ball on grass, scene {i}", f"a {ATTRS[i % 3]} photo of a red ball on grass, scene {i}",
                    [ATTRS[i % 3]], 100 + i) for i in range(9)]
    pairs = {v: [(_image(1000 * k + 2 * i), _image(1000 * k + 2 * i + 1)) for i in range(9)]
             for k, v in enumerate(variants)}
    paths = write_reports(results, pairs, rows, tmp_path, max_rows=2)
    return paths["report_html"], pairs, rows


def test_report_renders_offline_with_attribute_sections_sharp_images_and_prompts_under_them(chromium, tmp_path):
    from playwright.sync_api import sync_playwright

    html_path, pairs, rows = _report(tmp_path)
    requests: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1600, "height": 900})
            page.on("request", lambda r: requests.append(r.url))
            page.goto(html_path.resolve().as_uri())
            page.wait_for_load_state("load")

            assert page.locator("h1").inner_text() == "pluralign eval"
            h2 = page.locator("h2").all_inner_texts()
            assert ["Summary", "Per attribute", "Dial per category", "Plots", "Images"] == h2[:5]
            assert page.locator("table.images").count() == 3
            assert page.locator("h3").all_inner_texts() == ATTRS  # one section per attribute, in order

            images = page.eval_on_selector_all("img", "els => els.map(e => [e.alt, e.complete, e.naturalWidth])")
            assert len(images) == 3 + 3 * 2 * 4 * 2  # plots; 3 attributes x 2 rows x 4 variants x (I_o, I_a)
            assert all(done and width > 0 for _, done, width in images), images
            assert all(width >= 128 for alt, _, width in images if " row " in alt)

            # each image row is directly followed by its prompts, below the images and shown
            layout = page.eval_on_selector_all("tr.pair", """els => els.map(tr => {
                const p = tr.nextElementSibling, box = p.getBoundingClientRect();
                const bottoms = [...tr.querySelectorAll('img')].map(i => i.getBoundingClientRect().bottom);
                return {cls: p.className, top: box.top, height: box.height, imgBottom: Math.max(...bottoms),
                        text: p.innerText};
            })""")
            shown = [0, 3, 1, 4, 2, 5]  # the first two rows of each attribute
            assert len(layout) == len(shown)
            for row, cell in zip(shown, layout):
                assert cell["cls"] == "prompt" and cell["height"] > 10
                assert 0 <= cell["top"] - cell["imgBottom"] < 12, cell
                assert rows[row].prompt_o in cell["text"] and rows[row].prompt_a in cell["text"]
            assert page.get_by_text(rows[4].prompt_a, exact=True).is_visible()

            # what the reader sees of an image is the model's pixels, each a 4x4 block: no smoothing anywhere
            box = page.locator("img[alt='adapter@0.5 row 3 I_a']").bounding_box()
            clip = {"x": round(box["x"]), "y": round(box["y"]), "width": 128, "height": 128}
            shot = Image.open(io.BytesIO(page.screenshot(clip=clip, full_page=True))).convert("RGB")
            expected = np.asarray(pairs["adapter@0.5"][3][1]).repeat(4, 0).repeat(4, 1)
            assert shot.size == (128, 128)
            assert np.abs(np.asarray(shot, dtype=int) - expected).max() <= 2

            assert page.locator("main").bounding_box()["width"] <= 1280  # a readable measure on a wide screen
            full = Image.open(io.BytesIO(page.screenshot(full_page=True))).convert("RGB")
        finally:
            browser.close()
    full.save(tmp_path / "report.png")  # for a look when an assertion below fails
    assert full.width == 1600 and full.height > 2000, full.size
    pixels = np.asarray(full, dtype=float)
    assert pixels.std() > 20  # not a blank page
    assert (pixels.min(axis=2) < 200).mean() > 0.05  # a good part of it is ink and images, not background
    assert requests and all(u.startswith(("file:", "data:")) for u in requests), requests
