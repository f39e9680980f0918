"""Data sets come from the package registry into a cache, one member of one package file; failures are one line."""

from __future__ import annotations

import io
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest

from evaluation.bootstrap import GroupResampler, weighted_auc, weighted_log_loss
from evaluation.fetch import FetchError, PackageFile, package_file
from evaluation.metrics import roc_auc


@pytest.fixture()
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("PULSE_DATA_DIR", str(tmp_path))
    (tmp_path / "packages").mkdir()
    return tmp_path


def test_a_member_of_a_cached_wheel_is_extracted_once(cache: Path) -> None:
    with zipfile.ZipFile(cache / "packages" / "somedata-1.2-py3-none-any.whl", "w") as wheel:
        wheel.writestr("somedata/data/ratings.txt", "1\t2\t5\n")
    spec = PackageFile("somedata", "1.2", "somedata/data/ratings.txt")
    path = package_file(spec, quiet=True)
    assert path.read_text() == "1\t2\t5\n" and path.is_relative_to(cache)
    (cache / "packages" / "somedata-1.2-py3-none-any.whl").unlink()
    assert package_file(spec, quiet=True) == path, "the extracted member is read from the cache next time"


def test_a_member_of_a_source_distribution_is_found_under_its_top_folder(cache: Path) -> None:
    payload = b"text\t0.5\n"
    with tarfile.open(cache / "packages" / "someSentiment-3.3.2.tar.gz", "w:gz") as sdist:
        info = tarfile.TarInfo("someSentiment-3.3.2/additional_resources/set.txt")
        info.size = len(payload)
        sdist.addfile(info, io.BytesIO(payload))
    spec = PackageFile("someSentiment", "3.3.2", "additional_resources/set.txt", sdist=True)
    assert package_file(spec, quiet=True).read_bytes() == payload


def test_a_missing_member_is_a_one_line_error(cache: Path) -> None:
    with zipfile.ZipFile(cache / "packages" / "somedata-1.2-py3-none-any.whl", "w") as wheel:
        wheel.writestr("somedata/other.txt", "")
    with pytest.raises(FetchError, match="holds no somedata/ratings.txt") as error:
        package_file(PackageFile("somedata", "1.2", "somedata/ratings.txt"), quiet=True)
    assert "\n" not in str(error.value)


def test_a_release_the_registry_does_not_have_is_a_one_line_error(cache: Path) -> None:
    with pytest.raises(FetchError, match="cannot fetch pulse-engine-no-such-package==0.0.1") as error:
        package_file(PackageFile("pulse-engine-no-such-package", "0.0.1", "x/y.txt"), quiet=True)
    assert "\n" not in str(error.value)


def test_weighted_statistics_with_unit_weights_equal_the_plain_ones() -> None:
    rng = np.random.default_rng(3)
    y = rng.random(500) < 0.3
    scores = np.round(rng.random(500) + 0.4 * y, 2)  # rounded: many ties
    assert weighted_auc(y, scores)(np.ones(500)) == pytest.approx(roc_auc(y.tolist(), scores.tolist()), abs=1e-12)
    p = np.clip(scores / scores.max(), 0.01, 0.99)
    expected = -np.mean(np.where(y, np.log(p), np.log(1 - p)))
    assert weighted_log_loss(y, p)(np.ones(500)) == pytest.approx(expected)


def test_user_resampling_widens_intervals_when_records_of_a_user_agree() -> None:
    """50 users with 20 identical records each carry the information of 50 records, not 1,000."""
    rng = np.random.default_rng(1)
    per_user = rng.random(50) < 0.5
    values = np.repeat(per_user.astype(float), 20)
    users = np.repeat(np.arange(50), 20)
    _, low, high = GroupResampler(users, n_boot=400, seed=2).mean(values)
    _, low_records, high_records = GroupResampler(np.arange(1000), n_boot=400, seed=2).mean(values)
    assert high - low > 3 * (high_records - low_records)


def test_paired_ratios_share_resamples() -> None:
    users = np.repeat(np.arange(40), 5)
    base = np.random.default_rng(4).random(200)
    ratio = GroupResampler(users, n_boot=300, seed=5).ratio_of_means(2 * base, base)
    assert ratio == pytest.approx((2.0, 2.0, 2.0)), "a column twice another is twice it in every resample"
