"""GenEval-style prompt-adherence evaluation for the emoji world (`pixart eval`).

    prompts.py  the fixed, seeded prompt set (held-out emoji-world scenes and their captions)
    scorer.py   reads an image and the requested scene, returns per-check results (no generator involved)
    run.py      generation + scoring + summaries, the markdown table, the JSON report and the sample grid

Nothing heavy is imported here, so the `pixart` command line stays instant.
"""

# Named prompt-set sizes for `pixart eval --subset` (the first N prompts of the set).
SUBSETS = {"tiny": 2, "small": 24, "standard": 100, "large": 400}
