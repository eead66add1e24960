"""The instructor's side: assignment files, hand-in bundles, verifying and grading them, and the
class page.

    assignment.py  the assignment file: base config, locked and free keys, target, grading rules
    bundle.py      `dlcourse handin`: a run as a zip with a manifest; and reading one, untrusted
    verify.py      what a hand-in proves: hashes, rules, summary.json against metrics.jsonl
    measure.py     the kept weights measured again on the grader's test data
    gradebook.py   the rows of a class: flags across students, points, gradebook.csv
    classpage.py   class.html: the histogram, the table, the flags, the leaderboard

The modules import torch only where they need it, so `dlcourse assignment show` stays light.
"""
