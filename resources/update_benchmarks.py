"""Rewrite the "## Results" part of BENCHMARKS.md from the runs' own results.md files.

Usage: python resources/update_benchmarks.py   (from the repository root)

Each run folder under benchmarks/ is included unchanged but for heading levels (one deeper),
a line naming the folder, and image paths (relative to the repository root), in the order of RUNS.
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RUNS = ["colin27-whole-r8-600s-sup", "colin27-whole-r8-600s-k2", "mni152-whole-r8-600s", "colin27-whole-r7-600s", "colin27-whole-r6", "mni152-whole-r6", "brain1-whole-r6", "colin27-whole-r5-120s", "colin27-whole-r5", "colin27-whole-r5-s1-k4", "mni152-whole-r5",
        "brain1-whole-r5", "colin27-whole-r4-k4", "colin27-whole-r4-k8", "colin27-whole-r4-bcp", "colin27-whole-r4-alone-k4",
        "colin27-whole-methods", "mni152-whole", "mni152-whole-bcp", "brain1-whole-bcp", "breast1-whole-bcp", "colin27-whole-r3", "colin27-whole", "colin27-whole-quick", "colin27-whole-600s", "brain1-whole", "breast1-whole", "colin27", "colin27-teacher-predicts", "colin27-dropout-all", "colin27-600steps", "colin27-quick", "mni152",
        "mni152-quick"]
#: what a section's own results.md cannot say about its run
NOTES = {
    "colin27-whole-r8-600s-k2": "the eighth round, alone on the machine: the 600 s budget at k=2, `bcp` and the registered "
    "`supervised`, one seed (the 120 s cells are 120 s into a 600 s schedule).",
    "mni152-whole-r8-600s": "the eighth round, alone on the machine: `bcp` against the annotated slices alone at the 600 s "
    "budget, two seeds (the 120 s cells are 120 s into a 600 s schedule, not the 120 s budget: that is the sixth round's).",
    "colin27-whole-r8-600s-sup": "the eighth round, alone on the machine, with the registration the prior keeps (20 demons "
    "iterations at every level): the registered `supervised` at the 600 s budget, k=4, two seeds (its 120 s cells are 120 s into a "
    "600 s schedule); `bcp`'s 600 s with the same registration are the seventh round's share measurements (0.737 and 0.748).",
    "colin27-whole-r7-600s": "the seventh round, alone on the machine, with a shorter registration in the prior (demons 20, 10, 5 "
    "iterations; measured, not adopted); the 600 s budget at k=4, `bcp` and the registered `supervised`, two seeds (the 120 s cells are 120 s "
    "into a 600 s schedule, not the 120 s budget: that is the sixth round's).",
    "colin27-whole-r6": "the sixth round, alone on the machine: the network's share in the prediction one half (was 0.3), "
    "hard labels without torch's slow argmax; the 120 s budget at k=2 and k=4, two seeds, `bcp` and the registered `supervised`.",
    "mni152-whole-r6": "the sixth round, alone on the machine: the network's share one half; the 120 s budget, two seeds.",
    "brain1-whole-r6": "the sixth round, alone on the machine: the network's share one half; the 120 s budget, two seeds.",
    "colin27-whole-r5-120s": "the fifth round, alone on the machine: the 120 s budget at k=2 and k=4, two seeds on the time axis.",
    "colin27-whole-r5": "the fifth round, alone on the machine: the step table at k=2 and k=4 (two seeds), and the 600 s "
    "budget on the time axis, seed 0 (its 120 s cells are 120 s into a 600 s schedule, not the 120 s budget: that is the run above).",
    "colin27-whole-r5-s1-k4": "the fifth round, alone on the machine: the 600 s budget at k=4, seed 1.",
    "mni152-whole-r5": "the fifth round, alone on the machine: `bcp` against the annotated slices alone on the whole MNI152 head, two seeds.",
    "brain1-whole-r5": "the fifth round, alone on the machine: `bcp` against the annotated slices alone on the CT case, two seeds.",
    "colin27-whole-r4-k4": "the fourth round, alone on the machine: the time axis at k=4 up to 600 s.",
    "colin27-whole-r4-bcp": "the fourth round, alone on the machine: `bcp`, the best row of the methods' step table, on the time axis at k=4 and k=8 (it became the default method).",
    "colin27-whole-r4-k8": "the fourth round, alone on the machine: the time axis at k=8 up to 120 s, with the annotated-slices-only baseline.",
    "brain1-whole-bcp": "the fourth round, alone on the machine: `bcp`, the new default method, on the CT case.",
    "breast1-whole-bcp": "the fourth round, alone on the machine: `bcp`, the new default method, on the CT case.",
    "colin27-whole-r4-alone-k4": "the fourth round, alone on the machine: the annotated-slices-only baseline at k=4.",
    "colin27-whole-methods": "the fourth round's step table of every method, two seeds, one training at a time with one thread "
    "while other work (tests, editing) shared the machine: its seconds are upper bounds; steps and Dice do not depend on load.",
    "mni152-whole": "the fourth round, alone on the machine: the whole MNI152 head, the time axis of `mean_teacher` (the default method until this round).",
    "mni152-whole-bcp": "the fourth round, alone on the machine: `bcp` on the whole MNI152 head.",
    "colin27-whole-r3": "the third round's step-budget table (annotated slices drawn balanced by class), made while "
    "other work kept the machine at load 6-8, so no time axis; steps do not depend on load. The full-supervision "
    "row is now a network trained on every slice for 2000 steps without the prior: 0.727, where it predicted "
    "nothing before (0.000, the second round below).",
    "colin27-whole": "the second round (registered prior, nearby prior input). Its 'full supervision' row (0.000) is "
    "a network trained on every slice without the prior for 600 steps (1 thread, beside another training): it "
    "predicts no structure yet (300 steps with 2 threads: none either); a converged ceiling on a whole volume needs "
    "a longer run than this bench makes. The same holds for breast1-whole.",
    "colin27-whole-quick": "the first round, before the prior registered slices.",
    "brain1-whole": "the second round (registered prior, nearby prior input).",
    "breast1-whole": "the second round. The lesion lies on 3 slices: at k=2 one slice with lesion is scored, so one "
    "model's cell moves by 0.5 between checkpoints.",
    "colin27-whole-600s": "one training with a 600 s budget, scored on the way: its schedule spans the 600 s, so "
    "its 120 s cell is not the 120 s budget's result (first round: 0.690). Run before the prior registered slices.",
    "colin27": "this and the sections after it are of the cropped protocol, before the whole-volume round.",
    "colin27-dropout-all": "the engine before dropout was kept to the last block (commit ef14622, dropout after "
    "every convolution); the command wrote to benchmarks/colin27, renamed since.",
    "colin27-teacher-predicts": "the engine before the student predicted (commit 81d3158: mean_teacher and ua_mt "
    "scored with their EMA teacher, and whole-volume inference ran the teacher too, for a map nothing showed); "
    "the command wrote to benchmarks/colin27, kept under this name since.",
    "colin27-600steps": "run on the engine of commit 81d3158, where mean_teacher and ua_mt were scored with their EMA "
    "teacher; at 600 steps the student scores the same (mean_teacher, k=4, seeds 0 and 1: student 0.646, teacher 0.648).",
}
INTRO = """## Results

Each section below is the `results.md` that the command wrote, unchanged but for heading levels,
a line naming its folder, and image paths.
"""


def section(run: str) -> str:
    text = (ROOT / "benchmarks" / run / "results.md").read_text(encoding="utf-8")
    text = re.sub(r"^(#+) ", lambda m: "#" + m.group(1) + " ", text, flags=re.M)
    text = text.replace("](curves.png)", f"](benchmarks/{run}/curves.png)").rstrip() + "\n"
    head, rest = text.split("\n", 1)
    note = f"`benchmarks/{run}`" + (f": {NOTES[run]}" if run in NOTES else "")
    return f"{head}\n\n{note}\n{rest}"


def main() -> None:
    path = ROOT / "BENCHMARKS.md"
    head = path.read_text(encoding="utf-8").split("\n## Results\n")[0].rstrip()
    parts = [section(r) for r in RUNS if (ROOT / "benchmarks" / r / "results.md").exists()]
    path.write_text(head + "\n\n" + INTRO + "\n" + "\n".join(parts), encoding="utf-8")


if __name__ == "__main__":
    main()
