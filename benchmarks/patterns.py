"""The benchmark patterns of issue 8 by name: one place for every script in this folder."""

PATTERNS = {
    "P1": "global(first, eos) + window(3) + random(2, block=128)",
    "P2": "global(0:128) + window(193) + random(3, block=128)",
    "P3": "window(left=1023, right=0)",
    "P4": "(global(0:4) + window(left=4095, right=0)) & causal",
    "causal": "causal",
    "all": "all",
}
