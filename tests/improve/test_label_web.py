"""The labelling web page: a real server, driven by headless Chromium (Debian's chromium and
chromium-driver, installed by scripts/chromium.sh) through selenium, and by plain HTTP for bad input.

In CI (``CI=true``) a missing browser or driver fails the browser test; elsewhere it is skipped with
the reason.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from scanflow_core.improve import LabelQueue
from scanflow_core.improve.web import LabelServer

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def browser_window() -> str:
    return "900,900"


@pytest.fixture
def digits_queue(tmp_path: Path, digits: tuple[np.ndarray, np.ndarray]) -> Path:
    x, _ = digits
    path = tmp_path / "labels.db"
    with LabelQueue(path, classes=range(10)) as q:
        q.enqueue_many(
            x[:3], ids=["d0", "d1", "d2"], metadata=[{"index": i} for i in range(3)], priorities=[3, 2, 1]
        )
    return path


def labels_in(path: Path) -> dict[str, object]:
    with sqlite3.connect(path) as db:
        rows = db.execute("SELECT id, label FROM samples ORDER BY position").fetchall()
    return {sample_id: (json.loads(label) if label is not None else None) for sample_id, label in rows}


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_a_person_labels_digits_in_the_browser(browser, digits_queue, digits, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.ui import WebDriverWait

    _, y = digits
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "scanflow_core",
            "label",
            str(digits_queue),
            "--web",
            "--port",
            "0",
            "--exit-when-done",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    try:
        first_line = server.stdout.readline()
        assert first_line.startswith("labelling page: http://127.0.0.1:"), first_line + server.stderr.read()
        url = first_line.split()[2]
        wait = WebDriverWait(browser, 30)

        browser.get(url)
        wait.until(expected_conditions.presence_of_element_located((By.ID, "sample")))
        assert browser.find_element(By.ID, "sample-id").text == "d0"
        assert browser.find_element(By.ID, "progress").text == "0 of 3 labelled"
        image = browser.find_element(By.ID, "sample")
        assert (
            browser.execute_script("return arguments[0].complete && arguments[0].naturalWidth", image) == 192
        )
        browser.save_screenshot(str(tmp_path / "label-page.png"))

        browser.find_element(By.ID, f"label-{y[0]}").click()  # first sample: a click
        wait.until(expected_conditions.text_to_be_present_in_element((By.ID, "sample-id"), "d1"))
        assert labels_in(digits_queue) == {"d0": int(y[0]), "d1": None, "d2": None}

        browser.find_element(By.ID, f"label-{y[1]}").click()  # second sample: a click
        wait.until(expected_conditions.text_to_be_present_in_element((By.ID, "sample-id"), "d2"))
        assert labels_in(digits_queue) == {"d0": int(y[0]), "d1": int(y[1]), "d2": None}

        browser.find_element(By.TAG_NAME, "body").send_keys(str(y[2]))  # third: the key of the class
        wait.until(expected_conditions.presence_of_element_located((By.ID, "done")))
        assert browser.find_element(By.ID, "done").text == "All 3 samples are labelled."
        browser.save_screenshot(str(tmp_path / "label-done.png"))

        assert server.wait(timeout=30) == 0  # --exit-when-done
    finally:
        if server.poll() is None:
            server.kill()
        server.communicate(timeout=30)
    assert labels_in(digits_queue) == {"d0": int(y[0]), "d1": int(y[1]), "d2": int(y[2])}
    for shot in ("label-page.png", "label-done.png"):
        assert (tmp_path / shot).read_bytes().startswith(b"\x89PNG")
    with sqlite3.connect(digits_queue) as db:
        labellers = {row[0] for row in db.execute("SELECT labelled_by FROM samples")}
    assert len(labellers) == 1 and labellers.pop().startswith("web-")


def post(url: str, fields: dict[str, str]) -> tuple[int, str]:
    data = urllib.parse.urlencode(fields).encode()
    request = urllib.request.Request(url, data=data, method="POST")
    opener = urllib.request.build_opener(NoRedirect)
    try:
        with opener.open(request, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        with error:
            return error.code, error.read().decode()


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: object, **kwargs: object) -> None:
        return None


def test_the_server_refuses_bad_labels_and_answers_status(digits_queue):
    queue = LabelQueue(digits_queue)
    server = LabelServer(queue, port=0).start()
    try:
        status, page = post(server.url + "label", {"id": "d0", "label": "42"})
        assert status == 400 and "label &#x27;42&#x27; is not one of the classes" in page
        status, page = post(server.url + "label", {"id": "nope", "label": "1"})
        assert status == 400 and "no sample &#x27;nope&#x27;" in page
        status, _ = post(server.url + "label", {"id": "d1", "label": "3"})
        assert status == 303
        status, _ = post(server.url + "label", {"id": "d2", "action": "skip"})
        assert status == 303
        with urllib.request.urlopen(server.url + "status", timeout=10) as response:
            assert json.load(response) == {"total": 3, "labelled": 1, "unlabelled": 2, "claimed": 0}
        with urllib.request.urlopen(server.url + "sample/d0.png", timeout=10) as response:
            assert response.headers["Content-Type"] == "image/png"
            assert response.read().startswith(b"\x89PNG")
        with pytest.raises(urllib.error.HTTPError) as missing:
            urllib.request.urlopen(server.url + "elsewhere", timeout=10)
        assert missing.value.code == 404
        missing.value.close()
    finally:
        server.stop()
        queue.close()
    assert labels_in(digits_queue) == {"d0": None, "d1": 3, "d2": None}
