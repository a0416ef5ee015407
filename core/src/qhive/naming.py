"""Readable task names, derived from the task id ("amber-fox-river-seven").

Four words from a 256-word list name 2**32 ids, so names are for people, not
for lookups: look tasks up by id.
"""

from __future__ import annotations

WORDS = (
    "able", "acid", "aged", "also", "area", "army", "away", "baby", "back", "ball", "band",
    "bank", "base", "bath", "bear", "beat", "bell", "belt", "best", "bird", "blow", "blue",
    "boat", "body", "bone", "book", "boot", "born", "boss", "both", "bowl", "bulk", "burn",
    "bush", "busy", "cake", "call", "calm", "came", "camp", "card", "care", "cart", "case",
    "cash", "cast", "cell", "chat", "chip", "city", "clay", "club", "coal", "coat", "code",
    "cold", "cook", "cool", "cope", "copy", "core", "corn", "cost", "crew", "crop", "dark",
    "data", "date", "dawn", "deal", "dear", "deep", "deer", "desk", "dial", "diet", "disc",
    "dock", "door", "dose", "down", "draw", "drop", "drum", "dual", "duck", "dust", "duty",
    "each", "earn", "ease", "east", "easy", "edge", "else", "envy", "epic", "even", "ever",
    "exit", "face", "fact", "fair", "fall", "farm", "fast", "fern", "file", "fill", "film",
    "find", "fine", "fire", "firm", "fish", "five", "flag", "flat", "flow", "folk", "food",
    "foot", "fork", "form", "fort", "four", "free", "frog", "fuel", "full", "fund", "gain",
    "game", "gate", "gear", "gift", "girl", "glad", "glow", "goal", "gold", "golf", "good",
    "gray", "grid", "grow", "gulf", "hair", "half", "hall", "hand", "hard", "harp", "hawk",
    "head", "heat", "herb", "hero", "hill", "hint", "hold", "hole", "home", "hope", "horn",
    "host", "hour", "huge", "idea", "inch", "iron", "item", "jade", "jazz", "join", "joke",
    "jump", "jury", "keen", "keep", "kind", "king", "kite", "knee", "knot", "lake", "lamb",
    "lamp", "land", "lane", "last", "lawn", "lead", "leaf", "lens", "life", "lift", "lime",
    "line", "link", "lion", "list", "live", "load", "loan", "lock", "loft", "long", "loud",
    "love", "luck", "mail", "main", "malt", "many", "mark", "mast", "meal", "mild", "milk",
    "mill", "mind", "mint", "mist", "mode", "moon", "moss", "moth", "move", "much", "mule",
    "nail", "name", "navy", "neat", "neck", "nest", "news", "nice", "nine", "node", "noon",
    "nose", "note", "oak", "oval", "oven", "pace", "pack", "page", "palm", "park", "path",
    "peak", "pear", "pine",
)
assert len(WORDS) == 256 and len(set(WORDS)) == 256


def humanize(hexdigest: str, words: int = 4) -> str:
    """Fold the bytes of ``hexdigest`` into ``words`` bytes and name each."""
    data = bytes.fromhex(hexdigest)
    size, extra = divmod(len(data), words)
    folded = []
    start = 0
    for i in range(words):
        end = start + size + (1 if i < extra else 0)
        value = 0
        for byte in data[start:end]:
            value ^= byte
        folded.append(WORDS[value])
        start = end
    return "-".join(folded)
