"""VADER's four human-rated text sets (Hutto & Gilbert, ICWSM 2014), from `vaderSentiment`'s source distribution.

`additional_resources/hutto_ICWSM_2014.tar.gz` in the vaderSentiment 3.3.2 sdist holds, per set, a
`*_GroundTruth.txt` file of tab-separated `id, mean rating, text` lines (ratings from -4 to +4, the
mean of 20 raters). The label of a text is the sign of its mean rating; texts rated exactly 0 are
dropped. The archive is fetched into the cache at evaluation time (evaluation.fetch), never committed.
"""

from __future__ import annotations

import tarfile
from dataclasses import dataclass
from pathlib import Path

from evaluation.fetch import FetchError, PackageFile, package_file

__all__ = ["ARCHIVE", "SETS", "LabelledText", "load_sets", "parse_ground_truth"]

ARCHIVE = PackageFile("vaderSentiment", "3.3.2", "additional_resources/hutto_ICWSM_2014.tar.gz", sdist=True)
# set name -> (member of the archive, what it is)
SETS: dict[str, tuple[str, str]] = {
    "tweets": ("hutto_ICWSM_2014/tweets_GroundTruth.txt", "tweets"),
    "movie": ("hutto_ICWSM_2014/movieReviewSnippets_GroundTruth.txt", "movie review snippets (rottentomatoes)"),
    "amazon": ("hutto_ICWSM_2014/amazonReviewSnippets_GroundTruth.txt", "amazon product review sentences"),
    "nyt": ("hutto_ICWSM_2014/nytEditorialSnippets_GroundTruth.txt", "New York Times opinion editorial sentences"),
}


@dataclass(frozen=True, slots=True)
class LabelledText:
    """One rated text: its id in the set, the mean human rating, and the label (its sign)."""

    text_id: str
    rating: float
    text: str

    @property
    def label(self) -> str:
        return "positive" if self.rating > 0 else "negative"


def parse_ground_truth(content: str) -> list[LabelledText]:
    """The rated texts of one ground-truth file; neutral (0) and malformed lines are dropped.

    >>> rows = parse_ground_truth("1\\t2.5\\tGreat!\\r\\n2\\t0\\tMeh.\\r\\n3\\t-1.2\\tBad  \\r\\nbroken line\\n")
    >>> [(r.text_id, r.label, r.text) for r in rows]
    [('1', 'positive', 'Great!'), ('3', 'negative', 'Bad')]
    """
    rows = []
    for line in content.splitlines():
        parts = line.split("\t", 2)
        if len(parts) < 3:
            continue
        try:
            rating = float(parts[1])
        except ValueError:
            continue
        text = parts[2].strip()
        if rating != 0 and text:
            rows.append(LabelledText(parts[0], rating, text))
    return rows


def load_sets(names: list[str], quiet: bool = False) -> dict[str, list[LabelledText]]:
    """The named sets' rated texts, in file order (fetching the archive into the cache when needed)."""
    archive = package_file(ARCHIVE, quiet=quiet)
    return {name: parse_ground_truth(_member(archive, SETS[name][0])) for name in names}


def _member(archive: Path, member: str) -> str:
    try:
        with tarfile.open(archive) as tar:
            extracted = tar.extractfile(member)
            if extracted is None:
                raise FetchError(f"{archive.name} holds no file {member}")
            return extracted.read().decode("utf-8", errors="replace")
    except KeyError:
        raise FetchError(f"{archive.name} holds no {member}") from None
    except (OSError, tarfile.TarError) as exc:
        raise FetchError(f"cannot read {member} from {archive.name}: {exc}") from None
