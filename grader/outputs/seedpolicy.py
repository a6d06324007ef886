"""How episodes are named in everything people read: by seed, or by number for hidden grading seeds.

The report, the terminal summary, the site and the class exports all apply this one rule, so a
grading seed never reaches a student.
"""

from __future__ import annotations

import re

from grader.result import GradeResult


class SeedPolicy:
    """How episodes are named: by seed (public/explicit seeds) or by number (hidden grading seeds)."""

    def __init__(self, result: GradeResult):
        self.hidden = result.rubric is not None and result.rubric.seed_set == "grading"
        self.index = {e.seed: i + 1 for i, e in enumerate(result.episodes)}
        if self.hidden:
            # Seeds of the videos are among the episodes; any other number is left alone.
            for v in result.videos:
                self.index.setdefault(v.seed, 0)
        self._pattern = re.compile(r"(?<![0-9])(seed[ _=:#]?\s*)?([0-9]+)(?![0-9])", re.IGNORECASE)

    def label(self, seed: int) -> str:
        if not self.hidden:
            return f"seed {seed}"
        n = self.index.get(seed)
        return f"episode {n}" if n else "episode ?"

    def key(self, seed: int) -> str:
        return str(self.index.get(seed, "?")) if self.hidden else str(seed)

    def scrub(self, text: str | None) -> str:
        """``text`` with every hidden seed replaced by its episode number."""
        if not text or not self.hidden:
            return text or ""

        def replace(m: re.Match) -> str:
            seed = int(m.group(2))
            if seed not in self.index:
                return m.group(0)
            n = self.index[seed]
            return f"episode {n}" if n else "a hidden seed"

        return self._pattern.sub(replace, text)

    def leaks(self, text: str) -> bool:
        return self.hidden and any(int(m.group(2)) in self.index for m in self._pattern.finditer(text))


