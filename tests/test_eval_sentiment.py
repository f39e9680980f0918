"""`pulse evaluate --dataset sentiment` on a small archive laid out like VADER's (no network)."""

from __future__ import annotations

import io
import json
import random
import tarfile
from pathlib import Path

import pytest

from evaluation.datasets import DATASETS
from evaluation.datasets.sentiment import PULSE, replay_set
from evaluation.datasets.vader_sets import SETS, LabelledText
from pulse.cli import main

GOOD = ["great", "lovely", "excellent", "happy", "wonderful", "fun", "nice", "perfect"]
BAD = ["awful", "terrible", "sad", "horrible", "boring", "ugly", "bad", "worst"]
NEUTRAL = ["the", "movie", "phone", "editorial", "city", "plot", "battery", "today", "was", "and", "zork", "blip"]


def _ground_truth(seed: int, n: int) -> str:
    rng = random.Random(seed)
    lines = []
    for i in range(n):
        rating = rng.choice([-2.5, -1.0, 0.0, 1.0, 2.5])
        words = rng.sample(NEUTRAL, 4) + rng.sample(GOOD if rating > 0 else BAD, 1)
        rng.shuffle(words)
        lines.append(f"{i}\t{rating}\t{' '.join(words)}.\r\n")
    return "".join(lines)


def _tar_bytes(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, payload in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
    return buffer.getvalue()


@pytest.fixture()
def vader_sdist(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """A vaderSentiment-3.3.2 sdist in the cache whose archive holds four small ground-truth files."""
    monkeypatch.setenv("PULSE_DATA_DIR", str(tmp_path))
    contents = {name: _ground_truth(seed, 120) for seed, name in enumerate(SETS)}
    inner = _tar_bytes({member: contents[name].encode() for name, (member, _) in SETS.items()})
    (tmp_path / "packages").mkdir()
    (tmp_path / "packages" / "vaderSentiment-3.3.2.tar.gz").write_bytes(
        _tar_bytes({"vaderSentiment-3.3.2/additional_resources/hutto_ICWSM_2014.tar.gz": inner}))
    return contents


def test_the_command_writes_a_report_with_every_method_and_exact_explanations(vader_sdist, tmp_path: Path) -> None:
    assert "sentiment" in DATASETS
    out = tmp_path / "report"
    code = main(["evaluate", "--dataset", "sentiment", "--throughput-messages", "300", "--bootstrap", "50",
                 "--chat-users", "20", "--out", str(out), "--no-progress"])
    assert code == 0
    summary = json.loads((out / "report.json").read_text())
    assert {path.name for path in out.iterdir()} == {"report.md", "report.json", "accuracy.png", "throughput.png"}
    for name, content in vader_sdist.items():
        rated = [line for line in content.splitlines() if float(line.split("\t")[1]) != 0]
        result = summary["sets"][name]
        assert result["messages"] == len(rated) and result["rejected"] == 0 and result["users"] == 20
        assert set(result["last_50"]) == {PULSE, "majority", "lexicon (VADER)", "BagOfWords | MultinomialNB",
                                         "TF-IDF | LogisticRegression"}
        point, low, high = result["last_50"][PULSE]["accuracy"]
        assert low <= point <= high and point > 0.9  # the lexicon knows these words from the first message
    acceptance = summary["acceptance"]
    assert acceptance["explanation_max_error"] == {"sum": 0.0, "score": 0.0}
    assert summary["throughput"]["messages"] == 300 and "throughput_met" in acceptance
    assert summary["throughput"]["paired_model"]["late_over_early"] > 0
    report = (out / "report.md").read_text()
    assert "| tweets |" in report and "BagOfWords \\| MultinomialNB" in report and "Tuned parameters" in report


def test_each_message_is_scored_before_its_label_teaches() -> None:
    """Words seen once, labelled at random: a model that learned before scoring would look perfect."""
    rng = random.Random(3)
    rows = [LabelledText(str(i), rng.choice([-1.0, 1.0]), f"qx{i}zv") for i in range(400)]
    run = replay_set("leak", rows, seed=1, chat_users=10)
    correct = sum(p == y for p, y in zip(run.predictions[PULSE], run.labels))
    assert 0.35 < correct / len(run.labels) < 0.65
    assert run.model_state["learned"] == 400


def test_an_archive_without_the_sets_is_a_one_line_error(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("PULSE_DATA_DIR", str(tmp_path))
    (tmp_path / "packages").mkdir()
    (tmp_path / "packages" / "vaderSentiment-3.3.2.tar.gz").write_bytes(
        _tar_bytes({"vaderSentiment-3.3.2/additional_resources/hutto_ICWSM_2014.tar.gz": _tar_bytes({"x.txt": b""})}))
    code = main(["evaluate", "--dataset", "sentiment", "--out", str(tmp_path / "r"), "--no-progress"])
    assert code == 3
    assert capsys.readouterr().err.strip().count("\n") == 0
