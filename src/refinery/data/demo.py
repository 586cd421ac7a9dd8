"""Generated review data for the demo and the tests: product reviews, and a drifted hotel-stay variant.

Over 600 lines on purpose: about 430 of them are the word tables (aspects, openers, verdicts) and the
rest is the generator that picks from them; a template and the words it is filled with are read
together, so they are kept in one module rather than split into a table module and a code module.

Every sentence comes from the templates and vocabulary in this module (no external dataset). The
generator mixes what makes sentiment more than keyword spotting: aspect-specific vocabulary, negation
("not great", "never disappointed"), mixed opinions whose label follows the overall verdict ("the screen
is lovely but the battery dies by noon. Sending it back."), typos in about 5% of words, and 4% of labels
flipped so that no model scores 100%. The drifted variant is a different domain (hotel stays) with texts
two to three times longer and far fewer positive reviews. Output is deterministic for a seed.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from refinery.atomic import staged_file
from refinery.results import Record

LABELS = ("negative", "positive")
POSITIVE_SHARE = 0.55
# About as many positive hotel reviews as product ones: the hotel domain moves the texts, not the label
# prior, so that training on both domains does not tilt the model against the products' positives.
DRIFTED_POSITIVE_SHARE = 0.5
LABEL_NOISE = 0.04
TYPO_RATE = 0.05


@dataclass(frozen=True)
class Aspect:
    """One thing a review can talk about, with the words for liking and disliking it.

    ``pos_vp``/``neg_vp`` are verb phrases that follow the subject ("lasts all day"); they are written so
    that "<subject> never <phrase>" also reads as a sentence, which is how negation flips them.
    """

    subjects: tuple[str, ...]
    pos_adj: tuple[str, ...]
    neg_adj: tuple[str, ...]
    pos_vp: tuple[str, ...]
    neg_vp: tuple[str, ...]
    past: bool = False


# --------------------------------------------------------------------------------------------------
# Product reviews
# --------------------------------------------------------------------------------------------------

PRODUCT_ASPECTS: dict[str, Aspect] = {
    "battery": Aspect(
        ("the battery", "battery life", "the battery life"),
        ("excellent", "outstanding", "impressive", "reliable", "superb"),
        ("pathetic", "awful", "dreadful", "weak", "disappointing"),
        (
            "lasts all day",
            "easily gets me through two days",
            "charges surprisingly fast",
            "holds its charge for a week",
        ),
        (
            "dies by noon",
            "drains overnight even when idle",
            "takes forever to charge",
            "barely lasts three hours",
        ),
    ),
    "screen": Aspect(
        ("the screen", "the display", "the panel"),
        ("bright", "sharp", "gorgeous", "crisp", "lovely", "vivid"),
        ("dim", "washed out", "grainy", "blurry", "dull", "flickery"),
        ("looks fantastic even in sunlight", "shows colours beautifully", "is easy on the eyes at night"),
        (
            "is hard to read outside",
            "scratches far too easily",
            "has a dead pixel in the corner",
            "flickers at low brightness",
        ),
    ),
    "sound": Aspect(
        ("the sound", "the audio", "sound quality", "the bass"),
        ("rich", "clear", "warm", "punchy", "balanced", "amazing"),
        ("tinny", "muddy", "harsh", "flat", "distorted", "muffled"),
        ("fills the whole room", "stays clear even at full volume", "makes old albums feel new"),
        ("crackles at high volume", "cuts out every few minutes", "is like listening through a tin can"),
    ),
    "camera": Aspect(
        ("the camera", "photo quality", "the camera app"),
        ("stunning", "sharp", "excellent", "detailed", "fantastic"),
        ("grainy", "blurry", "mediocre", "noisy", "sluggish"),
        ("takes great shots even at night", "focuses instantly", "captures true colours"),
        ("struggles in low light", "takes ages to focus", "washes out every sky"),
    ),
    "performance": Aspect(
        ("performance", "the processor", "everyday speed", "the software"),
        ("snappy", "smooth", "fast", "responsive", "rock solid"),
        ("sluggish", "laggy", "slow", "buggy", "unstable"),
        ("handles everything I throw at it", "opens apps instantly", "runs games without a hiccup"),
        ("freezes several times a day", "stutters when I open two tabs", "crashes during updates"),
    ),
    "keyboard": Aspect(
        ("the keyboard", "the key feel", "typing"),
        ("comfortable", "tactile", "satisfying", "quiet", "precise"),
        ("mushy", "cramped", "loud", "wobbly", "stiff"),
        ("feels great for long sessions", "registers every press", "makes writing a pleasure"),
        ("misses keystrokes", "rattles on every press", "gives me sore wrists"),
    ),
    "comfort": Aspect(
        ("the fit", "comfort", "the padding", "the strap"),
        ("comfortable", "soft", "snug", "light", "secure"),
        ("uncomfortable", "tight", "itchy", "heavy", "loose"),
        ("stays comfortable for hours", "barely feels like anything", "never slips during workouts"),
        ("hurts after twenty minutes", "keeps falling off", "leaves marks on my skin"),
    ),
    "connectivity": Aspect(
        ("the bluetooth connection", "pairing", "the connection", "the wifi"),
        ("stable", "seamless", "reliable", "instant", "effortless"),
        ("unreliable", "flaky", "spotty", "patchy", "frustrating"),
        ("connects instantly every time", "stays stable across the house", "switches devices without fuss"),
        ("drops out constantly", "refuses to pair with my laptop", "disconnects every few minutes"),
    ),
    "noise": Aspect(
        ("the fan", "the motor", "the noise level"),
        ("quiet", "silent", "unobtrusive", "whisper quiet", "calm"),
        ("loud", "noisy", "whiny", "grating", "deafening"),
        ("stays quiet under load", "barely makes a sound", "runs silently at night"),
        ("screams under the lightest load", "rattles the whole desk", "wakes the baby"),
    ),
    "cleaning": Aspect(
        ("cleaning", "the filter", "the water tank"),
        ("easy", "simple", "quick", "painless", "straightforward"),
        ("fiddly", "messy", "awkward", "tedious", "impossible"),
        ("comes apart in seconds", "goes straight in the dishwasher", "takes a minute at most"),
        ("takes half an hour", "traps gunk in every corner", "leaks water everywhere"),
    ),
    "app": Aspect(
        ("the app", "the companion app", "the firmware"),
        ("intuitive", "polished", "handy", "clean", "useful"),
        ("clunky", "confusing", "buggy", "bloated", "useless"),
        ("makes setup painless", "syncs in seconds", "gets useful updates"),
        ("crashes on launch", "loses my settings", "keeps nagging me to sign up"),
    ),
    "build": Aspect(
        ("build quality", "the build", "the casing", "the hinge", "the finish"),
        ("solid", "sturdy", "premium", "robust", "well made"),
        ("flimsy", "cheap", "creaky", "fragile", "plasticky"),
        (
            "feels like it will last for years",
            "survived a fall onto concrete",
            "feels far pricier than it is",
        ),
        ("cracked within a week", "creaks when I pick it up", "feels like a cheap toy"),
    ),
    "delivery": Aspect(
        ("delivery", "shipping", "the courier"),
        ("quick", "fast", "speedy", "prompt", "smooth"),
        ("slow", "late", "chaotic", "sloppy", "painful"),
        ("arrived a day early", "arrived right on time", "kept me updated all the way"),
        ("arrived two weeks late", "lost the parcel twice", "left the box in the rain"),
        past=True,
    ),
    "price": Aspect(
        ("the price", "the value", "the price tag"),
        ("fair", "reasonable", "unbeatable", "fantastic", "great"),
        ("steep", "ridiculous", "inflated", "outrageous", "absurd"),
        ("is a steal for what you get", "beats every competitor", "made it an easy choice"),
        (
            "is far too high for what you get",
            "doubled a week after I bought it",
            "buys a better model elsewhere",
        ),
    ),
    "support": Aspect(
        ("customer support", "the support team", "customer service", "the help desk"),
        ("helpful", "friendly", "responsive", "patient", "brilliant"),
        ("useless", "rude", "unhelpful", "slow", "clueless"),
        ("sorted my problem in one call", "replied within an hour", "sent a replacement straight away"),
        ("ignored my emails for weeks", "kept me on hold for an hour", "refused to honour the warranty"),
        past=True,
    ),
    "packaging": Aspect(
        ("the packaging", "the box"),
        ("neat", "sturdy", "tidy", "eco friendly", "careful"),
        ("damaged", "excessive", "crushed", "flimsy", "wasteful"),
        ("protected everything perfectly", "was easy to recycle", "made it feel like a gift"),
        ("arrived torn open", "was full of useless plastic", "had clearly been opened before"),
        past=True,
    ),
    "setup": Aspect(
        ("setup", "the setup", "installation"),
        ("easy", "quick", "painless", "simple", "effortless"),
        ("confusing", "tedious", "painful", "frustrating", "complicated"),
        ("took five minutes", "went without a hitch", "worked first time"),
        ("took a whole evening", "failed three times", "needed an account for no reason"),
        past=True,
    ),
}

GENERIC_ASPECTS = ("build", "delivery", "price", "support", "packaging", "setup")

PRODUCTS: dict[str, tuple[str, ...]] = {
    "phone": ("battery", "screen", "camera", "performance", "sound"),
    "laptop": ("battery", "screen", "keyboard", "performance", "noise", "sound"),
    "tablet": ("battery", "screen", "performance", "sound"),
    "pair of headphones": ("sound", "battery", "comfort", "connectivity"),
    "pair of earbuds": ("sound", "battery", "comfort", "connectivity"),
    "bluetooth speaker": ("sound", "battery", "connectivity"),
    "smartwatch": ("battery", "screen", "comfort", "app"),
    "e-reader": ("screen", "battery", "performance"),
    "coffee machine": ("cleaning", "noise", "app"),
    "robot vacuum": ("battery", "noise", "app", "cleaning"),
    "monitor": ("screen", "sound"),
    "mechanical keyboard": ("keyboard", "connectivity", "noise"),
    "action camera": ("camera", "battery", "app"),
    "router": ("connectivity", "app", "performance"),
    "air purifier": ("noise", "app", "cleaning"),
}

PRODUCT_OPENERS = (
    "Bought this {product} {when}.",
    "I got the {product} as a gift for my {relative}.",
    "Been using this {product} for {duration} now.",
    "Ordered the {product} {when}.",
    "Upgraded to this {product} {when}.",
    "My {relative} recommended this {product}.",
    "Picked up this {product} in a sale {when}.",
    "This is my second {product} from this brand.",
    "Needed a new {product} for work.",
)
WHEN = (
    "last week",
    "a month ago",
    "in the spring",
    "over the holidays",
    "two weeks ago",
    "on a whim",
    "yesterday",
)
DURATION = ("a week", "three weeks", "a couple of months", "half a year", "about a year", "ten days")
RELATIVE = ("son", "daughter", "wife", "husband", "mum", "dad", "flatmate", "partner", "brother", "sister")

PRODUCT_VERDICTS = {
    "positive": (
        "Overall I'm really happy with it.",
        "Would definitely buy again.",
        "Highly recommend.",
        "Five stars.",
        "Never disappointed with this brand.",
        "Couldn't be happier.",
        "Worth every penny.",
        "I'd recommend it to anyone.",
        "Not perfect, but I'm keeping it.",
        "No regrets at all.",
        "Can't complain.",
        "Nothing to complain about.",
        "I wouldn't hesitate to buy it again.",
        "Does exactly what I wanted.",
        "A keeper.",
        "4/5, would buy again.",
        "Love it.",
        "Pleasantly surprised.",
        "Glad I went for it.",
        "What more could you ask for at this price?",
        "Why didn't I buy one sooner?",
    ),
    "negative": (
        "Returned it after a week.",
        "Would not recommend.",
        "Save your money.",
        "One star.",
        "Not worth the money.",
        "I regret buying it.",
        "Never buying from this brand again.",
        "Really disappointed.",
        "Can't recommend it.",
        "Sending it back.",
        "Wouldn't buy it again.",
        "Not sure why it has so many good reviews.",
        "Avoid.",
        "Complete waste of money.",
        "1/5, asked for a refund.",
        "Not what I hoped for.",
        "Back in the box it goes.",
        "Huge letdown.",
        "Never again.",
        "Who signed this off?",
        "Why did I ever buy this?",
    ),
}

SHORT_OPENERS = {
    "positive": (
        "Love it!",
        "Great buy.",
        "So pleased.",
        "Brilliant little {product}.",
        "What a find!",
        "Fantastic.",
    ),
    "negative": ("Total junk.", "Ugh.", "What a letdown.", "Terrible {product}.", "Don't bother.", "Awful."),
}

# --------------------------------------------------------------------------------------------------
# Hotel stays (the drifted domain)
# --------------------------------------------------------------------------------------------------

HOTEL_ASPECTS: dict[str, Aspect] = {
    "room": Aspect(
        ("the room", "our room", "the suite"),
        ("spacious", "spotless", "cosy", "stylish", "bright"),
        ("cramped", "shabby", "stuffy", "dark", "grubby"),
        ("had everything we needed", "was bigger than the photos suggested", "felt like a home from home"),
        ("smelled of old smoke", "looked nothing like the photos", "had a broken window latch"),
        past=True,
    ),
    "bed": Aspect(
        ("the bed", "the mattress", "the bedding"),
        ("comfortable", "huge", "soft", "heavenly", "supportive"),
        ("lumpy", "saggy", "hard", "creaky", "tiny"),
        ("gave us the best sleep in months", "was made up fresh every day", "felt like sleeping on a cloud"),
        ("left us with sore backs", "squeaked every time we moved", "had stains on the sheets"),
        past=True,
    ),
    "staff": Aspect(
        ("the staff", "the reception team", "the concierge", "the manager"),
        ("welcoming", "attentive", "friendly", "professional", "kind"),
        ("rude", "dismissive", "unhelpful", "disorganised", "indifferent"),
        (
            "remembered our names from the first day",
            "booked us a table at a lovely place nearby",
            "went out of their way to help",
        ),
        ("ignored us at the desk", "argued with us about the bill", "lost our booking twice"),
        past=True,
    ),
    "checkin": Aspect(
        ("check-in", "check-out", "arrival"),
        ("smooth", "quick", "efficient", "easy", "painless"),
        ("chaotic", "slow", "confusing", "stressful", "endless"),
        ("took two minutes", "was handled with a smile", "came with a glass of something cold"),
        ("took over an hour", "ended with us waiting in the lobby", "involved three different desks"),
        past=True,
    ),
    "breakfast": Aspect(
        ("breakfast", "the buffet", "the coffee", "room service"),
        ("delicious", "generous", "fresh", "excellent", "varied"),
        ("stale", "cold", "miserable", "overpriced", "bland"),
        ("was the highlight of every morning", "had fresh pastries every day", "kept us going until dinner"),
        (
            "ran out of everything by eight",
            "tasted like it had been reheated twice",
            "was cleared away before nine",
        ),
        past=True,
    ),
    "location": Aspect(
        ("the location", "the neighbourhood", "the area"),
        ("perfect", "central", "peaceful", "convenient", "charming"),
        ("remote", "sketchy", "inconvenient", "grim", "noisy"),
        (
            "put us a short walk from everything",
            "was right next to the tram stop",
            "had great cafes around the corner",
        ),
        ("meant a long taxi ride everywhere", "felt unsafe after dark", "was next to a building site"),
        past=True,
    ),
    "cleanliness": Aspect(
        ("the bathroom", "housekeeping", "the shower"),
        ("spotless", "immaculate", "pristine", "fresh", "sparkling"),
        ("dirty", "mouldy", "grimy", "filthy", "neglected"),
        ("kept everything spotless", "was cleaned twice a day", "had plenty of hot water"),
        ("had hair in the drain", "never refilled the towels", "had mould around the tiles"),
        past=True,
    ),
    "wifi": Aspect(
        ("the wifi", "the internet connection"),
        ("fast", "reliable", "free", "strong", "solid"),
        ("useless", "patchy", "slow", "unreliable", "expensive"),
        (
            "handled video calls without trouble",
            "worked in every corner of the building",
            "was free and fast",
        ),
        ("dropped every ten minutes", "could not load a single email", "cost extra per day"),
        past=True,
    ),
    "quiet": Aspect(
        ("the noise at night", "the soundproofing", "the street noise"),
        ("minimal", "excellent", "surprisingly good", "great", "impressive"),
        ("unbearable", "terrible", "constant", "awful", "ridiculous"),
        ("let us sleep through the night", "kept the city out completely", "made the room an oasis"),
        ("kept us awake until three", "woke us at six every morning", "made sleep impossible"),
        past=True,
    ),
    "pool": Aspect(
        ("the pool", "the spa", "the gym"),
        ("beautiful", "relaxing", "well kept", "lovely", "quiet"),
        ("overcrowded", "freezing", "dirty", "closed", "tiny"),
        ("was perfect after a day of sightseeing", "had plenty of loungers", "was open late"),
        ("was closed for the whole stay", "had no towels left by ten", "was full of broken equipment"),
        past=True,
    ),
    "value": Aspect(
        ("the price", "the value", "the final bill"),
        ("fair", "reasonable", "excellent", "great", "honest"),
        ("outrageous", "steep", "shocking", "inflated", "ridiculous"),
        (
            "was a bargain for the quality",
            "included more than we expected",
            "was less than nearby hotels charged",
        ),
        (
            "included charges nobody mentioned",
            "was double what we paid elsewhere",
            "came with a surprise resort fee",
        ),
        past=True,
    ),
}

HOTEL_KINDS = ("hotel", "guesthouse", "resort", "boutique hotel", "city hotel", "seaside hotel", "inn")
ROOM_TYPES = ("double room", "family room", "sea-view room", "junior suite", "twin room", "single room")
PURPOSES = ("a conference", "a wedding", "our anniversary", "a family holiday", "a city break", "a work trip")
COMPANIONS = ("partner", "wife", "husband", "two kids", "parents", "colleagues", "best friend")
MONTHS = ("January", "March", "April", "June", "August", "September", "October", "December")
NIGHTS = ("two", "three", "four", "five", "seven", "ten")

HOTEL_OPENERS = (
    "We stayed {nights} nights at this {kind} in {month} for {purpose}.",
    "Booked a {room} here for {purpose} and stayed {nights} nights.",
    "My {companion} and I spent {nights} nights at this {kind} in {month}.",
    "Came to this {kind} for {purpose} with my {companion}.",
    "We chose this {kind} for {purpose} after reading a lot of reviews.",
)
HOTEL_CONTEXT = (
    "We arrived late in the evening after a long drive.",
    "We had booked directly through the hotel's own website.",
    "The {kind} is about ten minutes from the old town on foot.",
    "Parking is available but costs extra per night.",
    "It was fairly busy because of a festival in town.",
    "We had a {room} on the third floor.",
    "We mostly used the {kind} as a base for day trips.",
    "It was our first visit to this part of the country.",
    "The building itself is quite old and has been renovated recently.",
)
HOTEL_VERDICTS = {
    "positive": (
        "Overall a wonderful stay and we would happily come back.",
        "We would not hesitate to book again.",
        "Highly recommended for couples and families alike.",
        "Never disappointed here, this was our third visit.",
        "All in all, worth every penny and more.",
        "We are already planning our next stay.",
        "Not perfect, but we left very happy.",
        "Five stars from both of us.",
        "A real gem, we will be back.",
        "What more could you want from a weekend away?",
    ),
    "negative": (
        "Overall we would not stay here again.",
        "We checked out a day early and went elsewhere.",
        "Save your money and book somewhere else.",
        "Never again, not even for a discount.",
        "We left feeling completely ripped off.",
        "Not worth the price, not even close.",
        "We have asked for a partial refund and are still waiting.",
        "Sadly a stay to forget.",
        "Two stars, and that is being generous.",
        "How does this place get such good ratings?",
    ),
}

INTENSIFIERS = ("really ", "very ", "super ", "incredibly ", "pretty ", "quite ", "absolutely ", "so ")
JOINERS = (" and ", ", and ", ". ", ". Also, ", ", plus ", ". On top of that, ")


def _opposite(label: str) -> str:
    return "negative" if label == "positive" else "positive"


def _cap(text: str) -> str:
    return text[:1].upper() + text[1:] if text else text


class _Writer:
    """Builds one review at a time from the templates, drawing every choice from one seeded RNG."""

    def __init__(self, rng: random.Random, aspects: dict[str, Aspect]) -> None:
        self.rng = rng
        self.aspects = aspects

    def pick(self, options: tuple[str, ...]) -> str:
        return self.rng.choice(options)

    def adj(self, options: tuple[str, ...]) -> str:
        word = self.pick(options)
        return (self.pick(INTENSIFIERS) + word) if self.rng.random() < 0.3 else word

    def clause(self, name: str, polarity: str) -> str:
        """One opinion about one aspect, plain or by negating the opposite opinion."""
        a = self.aspects[name]
        subj = self.pick(a.subjects)
        be, be_not = ("was", "wasn't") if a.past else ("is", "isn't")
        r = self.rng.random()
        good = polarity == "positive"
        if r < 0.35:
            return f"{subj} {be} {self.adj(a.pos_adj if good else a.neg_adj)}"
        if r < 0.65:
            return f"{subj} {self.pick(a.pos_vp if good else a.neg_vp)}"
        # Negation: the opposite vocabulary, negated.
        if good:
            return self.pick(
                (
                    f"{subj} {be_not} {self.pick(a.neg_adj)} at all",
                    f"{subj} never {self.pick(a.neg_vp)}",
                    f"I never had a single problem with {subj}",
                    f"{subj} didn't disappoint",
                    f"I have no complaints about {subj}",
                    f"I couldn't be happier with {subj}",
                    f"{subj} {be_not} bad at all",
                )
            )
        return self.pick(
            (
                f"{subj} {be_not} {self.pick(a.pos_adj)}",
                f"{subj} {be} not as {self.pick(a.pos_adj)} as advertised",
                f"{subj} never {self.pick(a.pos_vp)}",
                f"I'm not happy with {subj}",
                f"can't say I'm impressed by {subj}",
                f"{subj} didn't live up to the hype",
                f"{subj} {be} nothing special",
            )
        )

    def join(self, clauses: list[str]) -> str:
        text = clauses[0]
        for clause in clauses[1:]:
            joiner = self.pick(JOINERS)
            text += joiner + (_cap(clause) if joiner == ". " else clause)
        return _cap(text) + "."

    def contrast(self, against: str, main: str) -> str:
        """A mixed opinion whose weight falls on ``main``."""
        form = self.rng.random()
        if form < 0.4:
            return _cap(f"{against} but {main}.")
        if form < 0.7:
            return _cap(f"although {against}, {main}.")
        if form < 0.85:
            return _cap(f"{against}, however {main}.")
        return _cap(f"{main}, even if {against}.")


def _typo(word: str, rng: random.Random) -> str:
    i = rng.randrange(1, len(word) - 1)
    kind = rng.random()
    if kind < 0.45:  # swap two neighbouring letters
        return word[: i - 1] + word[i] + word[i - 1] + word[i + 1 :]
    if kind < 0.8:  # drop a letter
        return word[:i] + word[i + 1 :]
    return word[:i] + word[i] + word[i:]  # double a letter


def _add_typos(text: str, rng: random.Random, rate: float) -> str:
    words = text.split(" ")
    for i, word in enumerate(words):
        if len(word) >= 4 and word.isalpha() and rng.random() < rate:
            words[i] = _typo(word, rng)
    return " ".join(words)


def _style(text: str, label: str, rng: random.Random) -> str:
    """Surface variation that carries little signal: lower-case writing, exclamation, shouting."""
    r = rng.random()
    if r < 0.08:
        text = text.lower()
    elif r < 0.12:
        words = text.split(" ")
        i = rng.randrange(len(words))
        words[i] = words[i].upper()
        text = " ".join(words)
    if text.endswith(".") and rng.random() < (0.15 if label == "positive" else 0.1):
        text = text[:-1] + "!"
    return text


def _product_review(w: _Writer, label: str) -> str:
    rng = w.rng
    product = rng.choice(tuple(PRODUCTS))
    names = list(PRODUCTS[product] + GENERIC_ASPECTS)
    rng.shuffle(names)
    opener = ""
    if rng.random() < 0.45:
        opener = rng.choice(PRODUCT_OPENERS).format(
            product=product,
            when=rng.choice(WHEN),
            duration=rng.choice(DURATION),
            relative=rng.choice(RELATIVE),
        )
    verdict = rng.choice(PRODUCT_VERDICTS[label])
    shape = rng.random()
    if shape < 0.45:  # every opinion agrees
        body = w.join([w.clause(n, label) for n in names[: rng.choice((1, 1, 2, 2, 3))]])
        parts = [opener, body, verdict if rng.random() < 0.6 else ""]
    elif shape < 0.85:  # mixed: one aspect against the overall verdict
        body = w.contrast(w.clause(names[0], _opposite(label)), w.clause(names[1], label))
        parts = [opener, body, verdict if rng.random() < 0.7 else ""]
    elif shape < 0.93:  # mixed the other way round: praise or blame, then the verdict decides
        parts = [opener, _cap(w.clause(names[0], _opposite(label))) + ".", verdict]
    else:  # short exclamation with one reason
        short = rng.choice(SHORT_OPENERS[label]).format(product=product)
        parts = [short, _cap(w.clause(names[0], label)) + "."]
    return " ".join(p for p in parts if p)


def _hotel_review(w: _Writer, label: str) -> str:
    rng = w.rng
    names = list(HOTEL_ASPECTS)
    rng.shuffle(names)
    fill = {
        "nights": rng.choice(NIGHTS),
        "kind": rng.choice(HOTEL_KINDS),
        "month": rng.choice(MONTHS),
        "purpose": rng.choice(PURPOSES),
        "room": rng.choice(ROOM_TYPES),
        "companion": rng.choice(COMPANIONS),
    }
    parts = [rng.choice(HOTEL_OPENERS).format(**fill)]
    parts += [c.format(**fill) for c in rng.sample(HOTEL_CONTEXT, rng.choice((0, 0, 1)))]
    k = rng.choice((2, 3, 3, 4))
    against = rng.choice((0, 1, 1, 2)) if k >= 4 else rng.choice((0, 1))
    polarities = [_opposite(label)] * against + [label] * (k - against)
    rng.shuffle(polarities)
    clauses = [w.clause(n, p) for n, p in zip(names[:k], polarities, strict=True)]
    i = 0
    while i < len(clauses):
        if i + 1 < len(clauses) and polarities[i] != polarities[i + 1] and rng.random() < 0.7:
            main, other = (i + 1, i) if polarities[i + 1] == label else (i, i + 1)
            parts.append(w.contrast(clauses[other], clauses[main]))
            i += 2
        elif i + 1 < len(clauses) and polarities[i] == polarities[i + 1] and rng.random() < 0.5:
            parts.append(w.join(clauses[i : i + 2]))
            i += 2
        else:
            parts.append(_cap(clauses[i]) + ".")
            i += 1
    parts.append(rng.choice(HOTEL_VERDICTS[label]))
    return " ".join(parts)


def generate_reviews(n: int, seed: int, drifted: bool = False) -> pd.DataFrame:
    """Generate ``n`` labelled reviews from the templates in this module.

    Args:
        n: Number of rows.
        seed: Seed of the random generator; the same ``(n, seed, drifted)`` gives the same frame.
        drifted: Hotel-stay reviews instead of product reviews: another vocabulary, texts two to three
            times longer, about 50% positive instead of about 55%.

    Returns:
        A frame with columns ``text`` and ``label`` (``"negative"``/``"positive"``). About 4% of labels
        are deliberately wrong (label noise) and about 5% of words carry a typo.
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    rng = random.Random(f"refinery-demo:{seed}:{int(drifted)}")
    writer = _Writer(rng, HOTEL_ASPECTS if drifted else PRODUCT_ASPECTS)
    share = DRIFTED_POSITIVE_SHARE if drifted else POSITIVE_SHARE
    texts: list[str] = []
    labels: list[str] = []
    for _ in range(n):
        label = "positive" if rng.random() < share else "negative"
        text = _hotel_review(writer, label) if drifted else _product_review(writer, label)
        text = _style(_add_typos(text, rng, TYPO_RATE), label, rng)
        if rng.random() < LABEL_NOISE:
            label = _opposite(label)
        texts.append(text)
        labels.append(label)
    return pd.DataFrame({"text": pd.Series(texts, dtype=object), "label": pd.Series(labels, dtype=object)})


@dataclass(frozen=True)
class DemoData(Record):
    """The demo files written by :func:`write_demo_data`."""

    reviews_path: Path
    drifted_path: Path
    reviews_rows: int
    drifted_rows: int
    seed: int
    traffic_path: Path | None = None
    traffic_rows: int = 0
    label_counts: dict[str, dict[str, int]] = field(default_factory=dict)


def _write_csv(frame: pd.DataFrame, path: Path) -> None:
    with staged_file(path) as tmp:
        frame.to_csv(tmp, index=False, encoding="utf-8")


def write_demo_data(out_dir: Path, n: int = 2000, seed: int = 13) -> DemoData:
    """Write the demo's three files.

    - ``reviews.csv``: ``n`` product reviews, the training data of the first model;
    - ``drifted.csv``: ``n // 2`` hotel reviews, the new domain the service meets (the demo serves them
      and posts their labels as feedback);
    - ``traffic.csv``: ``n // 5`` unseen reviews, three product reviews to two hotel reviews: the traffic
      once both domains are served, in about the mix the retrained model is judged on.

    Args:
        out_dir: Folder to write into (created if needed).
        n: Rows of ``reviews.csv``.
        seed: Seed of ``reviews.csv``; ``drifted.csv`` uses ``seed + 1``, ``traffic.csv`` ``seed + 2``
            (products, and the order) and ``seed + 3`` (hotels).

    Returns:
        The paths, row counts and label counts of the files.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    reviews = generate_reviews(n, seed)
    drifted = generate_reviews(n // 2, seed + 1, drifted=True)
    hotels = n // 5 * 2 // 5
    mixed = pd.concat(
        [generate_reviews(n // 5 - hotels, seed + 2), generate_reviews(hotels, seed + 3, drifted=True)],
        ignore_index=True,
    )
    traffic = mixed.sample(frac=1.0, random_state=seed + 2).reset_index(drop=True)
    reviews_path, drifted_path = out_dir / "reviews.csv", out_dir / "drifted.csv"
    traffic_path = out_dir / "traffic.csv"
    _write_csv(reviews, reviews_path)
    _write_csv(drifted, drifted_path)
    _write_csv(traffic, traffic_path)
    return DemoData(
        reviews_path=reviews_path,
        drifted_path=drifted_path,
        reviews_rows=len(reviews),
        drifted_rows=len(drifted),
        seed=seed,
        label_counts={
            name: {k: int(v) for k, v in frame["label"].value_counts().sort_index().items()}
            for name, frame in (("reviews", reviews), ("drifted", drifted), ("traffic", traffic))
        },
        traffic_path=traffic_path,
        traffic_rows=len(traffic),
    )
