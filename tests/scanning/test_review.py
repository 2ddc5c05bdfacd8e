"""The review page: one self-contained HTML file with every flagged example, for images and
tables, written by the real CLI."""

import base64
import io
import json
import shutil
import subprocess
from html.parser import HTMLParser

import pandas as pd
import pytest
from PIL import Image
from typer.testing import CliRunner

from noisefind.cli import app
from noisefind.scanning.outputs import ORDER_COLUMNS

runner = CliRunner()
TINY = ["--width", "0.25", "--max-units", "20", "--quiet"]


class Page(HTMLParser):
    """Collects tags, attributes and the items the page lists."""

    def __init__(self, html: str):
        super().__init__()
        self.tags: list[tuple[str, dict]] = []
        self.items: list[dict] = []
        self.feed(html)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.tags.append((tag, attrs))
        if "suspect" in (attrs.get("class") or "").split():
            self.items.append({"tag": tag, **attrs})

    def count(self, tag: str) -> int:
        return sum(1 for t, _ in self.tags if t == tag)


def scan(tmp_path_factory, data: str, *args: str):
    out = tmp_path_factory.mktemp("scan")
    result = runner.invoke(app, ["scan", data, "--noise", "symmetric:0.1", "--out", str(out),
                                 *TINY, *args])
    assert result.exit_code == 0, result.output
    return out


@pytest.fixture(scope="module")
def digits_out(tmp_path_factory):
    return scan(tmp_path_factory, "digits", "--limit", "150", "--epochs", "8")


@pytest.fixture(scope="module")
def wine_out(tmp_path_factory):
    return scan(tmp_path_factory, "wine", "--epochs", "30", "--rank-by", "cutoff")


def review(out, *args) -> Page:
    result = runner.invoke(app, ["review", str(out), *args])
    assert result.exit_code == 0, result.output
    return Page((out / "report.html").read_text(encoding="utf-8"))


def test_image_page_is_one_self_contained_file(digits_out):
    page = review(digits_out)
    html = (digits_out / "report.html").read_text(encoding="utf-8")
    assert html.startswith("<!doctype html>")
    assert page.count("style") == 1 and page.count("script") == 1
    assert page.count("link") == 0  # no stylesheet or font to fetch
    for _, attrs in page.tags:  # nothing loads from anywhere but the page itself
        for key in ("src", "href"):
            assert not attrs.get(key) or attrs[key].startswith("data:")
    assert "http://" not in html and "https://" not in html


def test_every_flagged_example_is_listed_in_suspicion_order(digits_out):
    page = review(digits_out)
    suspects = pd.read_csv(digits_out / "suspects.csv")
    flagged = set(suspects.loc[suspects["suspected"], "index"])
    listed = {int(item["data-index"]): item for item in page.items}
    assert flagged and flagged <= set(listed)
    assert all(listed[i]["data-suspected"] == "true" for i in flagged)
    assert all("flagged" in listed[i]["class"] for i in flagged)
    ranks = [int(item["data-rank"]) for item in page.items]
    assert ranks == sorted(ranks) and len(page.items) == len(suspects)  # all 150 under --top


def test_cards_carry_labels_units_score_and_a_png_thumbnail(digits_out):
    page = review(digits_out)
    suspects = pd.read_csv(digits_out / "suspects.csv", dtype={"given_label": str})
    first = suspects.iloc[0]
    item = page.items[0]
    assert item["tag"] == "article" and item["data-label"] == first["given_label"]
    images = [attrs for tag, attrs in page.tags if tag == "img"]
    assert len(images) == len(page.items)
    data = images[0]["src"].removeprefix("data:image/png;base64,")
    with Image.open(io.BytesIO(base64.b64decode(data))) as thumbnail:
        assert thumbnail.format == "PNG" and thumbnail.size == (8, 8)
    html = (digits_out / "report.html").read_text(encoding="utf-8")
    # The card's score is the one the page is sorted by (here the default order's).
    order = ORDER_COLUMNS[json.loads((digits_out / "summary.json").read_text())["rank_by"]]
    assert order == "consensus_score"
    assert f"score {first[order]:.3f}" in html and "flips to" in html
    suggested = pd.read_csv(digits_out / "suspects.csv", dtype=str).iloc[0]["suggested_label"]
    assert f"given <b>{first['given_label']}</b>, likely <b>{suggested}</b>" in html


def test_filters_list_every_class_and_both_flag_states(digits_out):
    page = review(digits_out)
    selects = [attrs.get("id") for tag, attrs in page.tags if tag == "select"]
    assert selects == ["class-filter", "flag-filter"]
    values = [attrs.get("value") for tag, attrs in page.tags if tag == "option"]
    assert values[:11] == ["", *[str(k) for k in range(10)]]
    assert values[11:] == ["all", "flagged", "unflagged"]


CHROMIUM = next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome")
                 if shutil.which(n)), None)


@pytest.mark.skipif(CHROMIUM is None, reason="needs a headless Chromium")
@pytest.mark.parametrize("query,shown", [
    ("?show=flagged&class=3", lambda s: s["suspected"] & (s["given_label"] == "3")),
    ("?show=unflagged", lambda s: ~s["suspected"]),
    ("?show=bogus&class=99", lambda s: s["rank"] > 0),  # unknown values: no filter
])
def test_url_query_filters_the_page_in_a_browser(digits_out, query, shown):
    review(digits_out)
    dom = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--dump-dom",
         (digits_out / "report.html").as_uri() + query],
        capture_output=True, text=True, timeout=120, check=True).stdout
    suspects = pd.read_csv(digits_out / "suspects.csv", dtype={"given_label": str})
    visible = {int(item["data-index"]) for item in Page(dom).items if "hidden" not in item}
    assert visible == set(suspects.loc[shown(suspects), "index"])
    assert f"{len(visible)} of {len(suspects)} shown" in dom  # the script ran to the end


def test_top_limits_the_unflagged_examples_only(digits_out):
    page = review(digits_out, "--top", "5")
    suspects = pd.read_csv(digits_out / "suspects.csv")
    flagged = int(suspects["suspected"].sum())
    assert len(page.items) == flagged + 5
    assert sum(item["data-suspected"] == "false" for item in page.items) == 5


def test_tabular_page_shows_the_feature_rows(wine_out):
    page = review(wine_out)
    suspects = pd.read_csv(wine_out / "suspects.csv")
    headers = [t for t, _ in page.tags if t == "th"]
    assert len(headers) == 8 + 13  # the scan's columns and wine's 13 features
    assert all(item["tag"] == "tr" for item in page.items)
    assert set(suspects.loc[suspects["suspected"], "index"]) <= {
        int(item["data-index"]) for item in page.items}
    assert page.count("img") == 0
    # Listed in the order of --rank-by cutoff, and the page says so.
    listed = [int(item["data-index"]) for item in page.items]
    order = suspects.sort_values("cutoff_score", ascending=False, kind="stable")["index"]
    assert listed == [i for i in order if i in set(listed)]
    html = (wine_out / "report.html").read_text(encoding="utf-8")
    assert "Sorted by the cutoff's score" in html
    assert "AUROC of the cutoff score" in html and "AUROC of the score" in html


@pytest.mark.parametrize("make,message", [
    (lambda p: p, "no suspects.csv"),
    (lambda p: p / "missing", "no suspects.csv"),
])
def test_review_of_a_folder_without_a_scan_exits_2(tmp_path, make, message):
    result = runner.invoke(app, ["review", str(make(tmp_path))])
    assert result.exit_code == 2 and message in result.output
    assert len(result.output.strip().splitlines()) == 1
