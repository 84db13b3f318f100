"""Session-aware re-ranking of a home feed, the C API demo's bundle.

``rank`` scores the candidates the server sent against the user's in-session events (clicks,
add-to-cart, item views by category, with exponential time decay) and returns them best first.
The other entries exist to exercise the C API: ``boom`` raises, ``slow`` runs a long interruptible
loop, ``stuck`` spends seconds in one C call that holds the interpreter lock (sums of ranges summed
by ``map``: C iterating C, which no deadline check reaches), ``echo`` returns its input.
"""
import math
from collections import defaultdict

HALF_LIFE_MS = 10 * 60 * 1000
WEIGHTS = {"click": 1.0, "cart": 3.0, "purchase": 2.0, "view": 0.5}
W_AFFINITY, W_ITEM, W_POPULARITY, W_PRICE, BIAS = 1.4, 0.9, 0.35, -0.25, -1.0


def _affinities(events, now):
    by_category = defaultdict(float)
    by_item = defaultdict(float)
    for ev in events:
        age = max(0, now - ev["ts"])
        w = WEIGHTS.get(ev["type"], 0.0) * 0.5 ** (age / HALF_LIFE_MS)
        by_category[ev["category"]] += w
        by_item[ev["item_id"]] += w
    return by_category, by_item


def rank(inputs):
    now = inputs["now"]
    by_category, by_item = _affinities(inputs["events"], now)
    scored = []
    for c in inputs["candidates"]:
        z = (BIAS + W_AFFINITY * math.log1p(by_category.get(c["category"], 0.0))
             + W_ITEM * math.log1p(by_item.get(c["item_id"], 0.0))
             + W_POPULARITY * math.log1p(c["popularity"]) / 5.0
             + W_PRICE * math.log1p(c["price"]) / 5.0)
        scored.append((1.0 / (1.0 + math.exp(-z)), c["item_id"]))
    scored.sort(key=lambda s: (-s[0], s[1]))
    return {"ranked": [item for _, item in scored], "scores": [round(s, 6) for s, _ in scored],
            "events_used": len(inputs["events"])}


def boom(inputs):
    return inputs["n"] / 0


def slow(inputs):
    total = 0
    for i in range(inputs.get("n", 50_000_000)):
        total += i % 7
    return {"total": total}


def stuck(inputs):
    return {"total": sum(map(sum, [range(1 << 20)] * inputs.get("n", 300)))}


def echo(inputs):
    return inputs


def count_clicks(inputs):
    """A calc task run by a click event (see bundle.json triggers)."""
    return {"sku": inputs.get("sku"), "page": inputs.get("pageId")}


def on_click(inputs):
    """The infer task a click event triggers after count_clicks; its result reaches the listener."""
    calc = inputs["features"]["CountTask"]
    return {"sku": calc["sku"], "boost": 1.5 if calc["page"] == "JD_Home" else 1.0}
