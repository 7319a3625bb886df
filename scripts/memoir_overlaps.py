"""How well MEMOIR's TopHash masks separate in-scope from out-of-scope queries, before any editing.

    python scripts/memoir_overlaps.py --data zsre-dev [--start S] [--num-edits N] [--set KEY=VALUE ...]

Kept for the commands in docs/tuning/memoir.md and the README; the check itself is
``python -m editkit.methods.memoir.routing_check`` (the same options), which also covers the re-ranking
router of issue 20: with the default router it prints the best-overlap quantiles of rephrases and locality
prompts, the share of each that switches the memory on at τ ± 0.1, and how often a rephrase's best mask is
its own edit's.
"""

from editkit.methods.memoir.routing_check import main

if __name__ == "__main__":
    main()
