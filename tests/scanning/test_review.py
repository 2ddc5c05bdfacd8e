"""The review page: one self-contained HTML file with every flagged example, for images and
tables, written by the real CLI."""

import base64
import io
import json
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image
from typer.testing import CliRunner

from noisefind.cli import app
from noisefind.scanning.outputs import ORDER_COLUMNS, count_caution

runner = CliRunner()
TINY = ["--width", "0.25", "--quiet"]


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
    search = ["--max-units", "20"] if "--rank-by" in args else []  # the flip search's cap
    result = runner.invoke(app, ["scan", data, "--noise", "symmetric:0.1", "--out", str(out),
                                 *TINY, *search, *args])
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
    scripts = [attrs for tag, attrs in page.tags if tag == "script"]
    assert page.count("style") == 1 and len(scripts) == 2  # the class names (data) and the code
    assert [attrs.get("type") for attrs in scripts] == ["application/json", None]
    assert page.count("link") == 0  # no stylesheet or font to fetch
    for _, attrs in page.tags:  # nothing loads from anywhere but the page itself
        for key in ("src", "href"):
            assert not attrs.get(key) or attrs[key].startswith("data:")
    assert "http://" not in html and "https://" not in html
    assert "Sorted by the consensus score (three witnesses" in html  # no backbone, no fourth


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


def test_cards_carry_labels_score_and_a_png_thumbnail(digits_out):
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
    assert f"score {first[order]:.3f}" in html
    assert "flips to" not in html  # the default scan runs no flip search
    caution = count_caution(json.loads((digits_out / "summary.json").read_text()))
    assert (caution is not None) == ("may be far off" in html)  # the terminal's caution, if any
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
    assert len(headers) == 8 + 1 + 13  # the scan's columns, the decision and wine's features
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


class Browser:
    """Headless Chromium driven over the DevTools protocol on a pipe (fds 3 and 4): enough to
    open a page, press keys and read values back, with no library between."""

    def __init__(self, profile):
        import os

        ours_read, chrome_write = os.pipe()
        chrome_read, ours_write = os.pipe()

        def child_fds():  # Chromium reads commands on fd 3 and answers on fd 4
            read, write = os.dup(chrome_read), os.dup(chrome_write)  # out of 3 and 4's way
            os.dup2(read, 3)
            os.dup2(write, 4)

        self.process = subprocess.Popen(
            [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--remote-debugging-pipe",
             f"--user-data-dir={profile}", "about:blank"],
            preexec_fn=child_fds, pass_fds=(3, 4),  # kept open once child_fds made them
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.close(chrome_read)
        os.close(chrome_write)
        self.send_file, self.receive_file = os.fdopen(ours_write, "wb"), os.fdopen(ours_read, "rb")
        self.next_id, self.buffer, self.session = 0, b"", None

    def call(self, method, session=True, **params):
        self.next_id += 1
        message = {"id": self.next_id, "method": method, "params": params}
        if session and self.session:
            message["sessionId"] = self.session
        self.send_file.write(json.dumps(message).encode() + b"\0")
        self.send_file.flush()
        while True:
            while b"\0" not in self.buffer:
                chunk = self.receive_file.read1(65536)
                assert chunk, "Chromium closed the pipe"
                self.buffer += chunk
            raw, self.buffer = self.buffer.split(b"\0", 1)
            reply = json.loads(raw)
            if reply.get("id") == self.next_id:
                assert "error" not in reply, reply
                return reply["result"]

    def open(self, url):
        target = self.call("Target.createTarget", session=False, url=url)["targetId"]
        self.session = self.call("Target.attachToTarget", session=False, targetId=target,
                                 flatten=True)["sessionId"]
        self.wait_for("document.readyState === 'complete' && !!window.noisefindDecisions")

    def evaluate(self, expression):
        return self.call("Runtime.evaluate", expression=expression,
                         returnByValue=True)["result"].get("value")

    def wait_for(self, expression, seconds=30):
        import time

        deadline = time.monotonic() + seconds
        while not self.evaluate(expression):
            assert time.monotonic() < deadline, f"timed out waiting for {expression}"
            time.sleep(0.05)

    def press(self, *keys):
        for key in keys:
            for kind in ("keyDown", "keyUp"):
                self.call("Input.dispatchKeyEvent", type=kind, key=key,
                          **({"text": key} if kind == "keyDown" and len(key) == 1 else {}))

    def close(self):
        self.process.kill()
        self.process.wait(timeout=30)


@pytest.mark.skipif(CHROMIUM is None, reason="needs a headless Chromium (Debian: apt-get "
                                             "install chromium)")
def test_decisions_made_by_key_presses_are_kept_saved_and_exported(digits_out, tmp_path):
    review(digits_out)
    suspects = pd.read_csv(digits_out / "suspects.csv", dtype={"given_label": str,
                                                              "suggested_label": str})
    first, second, third, fourth = suspects.head(4).itertuples()
    relabel_to = next(str(k) for k in range(10) if str(k) != third.given_label)
    browser = Browser(tmp_path / "profile")
    try:
        browser.open((digits_out / "report.html").as_uri())
        # The first card has the focus: accept its suggestion, drop the second, relabel the
        # third by its class's digit, keep the fourth; then go back and undo the second.
        browser.press("a", "x", relabel_to, "c", "k", "k", "k", "u")
        assert browser.evaluate("document.getElementById('decided').textContent") == \
            "decided: 1 keep, 2 relabel, 0 drop"
        browser.press("x")  # and drop it after all
        saved = browser.evaluate("window.noisefindDecisions()")
        link = browser.evaluate("document.getElementById('save').href")
        # Kept in the page: a reload shows the same decisions.
        browser.call("Page.reload")
        browser.wait_for("document.readyState === 'complete' && !!window.noisefindDecisions")
        assert browser.evaluate("window.noisefindDecisions()") == saved
    finally:
        browser.close()
    from urllib.parse import unquote

    assert unquote(link.split(",", 1)[1]) == saved  # the download link carries the same file
    expected = "index,decision,label\n" + "".join(sorted(
        [f"{first.index},relabel,{first.suggested_label}\n", f"{second.index},drop,\n",
         f"{third.index},relabel,{relabel_to}\n", f"{fourth.index},keep,\n"],
        key=lambda line: int(line.split(",")[0])))
    assert saved == expected
    decisions = tmp_path / "decisions.csv"
    decisions.write_text(saved)
    exported = runner.invoke(app, ["export", str(digits_out), "--decisions", str(decisions),
                                   "--out", str(tmp_path / "clean.csv")])
    assert exported.exit_code == 0, exported.output
    manifest = pd.read_csv(tmp_path / "clean.csv", dtype={"label": str})
    labels = {int(Path(p).stem): label for p, label in zip(manifest["path"], manifest["label"],
                                                           strict=True)}
    assert second.index not in labels and len(labels) == 1797 - 1
    assert labels[first.index] == first.suggested_label and labels[third.index] == relabel_to
    assert labels[fourth.index] == fourth.given_label
