"""The course world: a small, seeded generator of everything the course trains and tests on.

Every lesson needs text with a known structure, and the course must run offline, so the course writes
its own corpus from a small probabilistic grammar (a few hundred words):

* **stories** -- short tales with a hero, a place, a problem and an ending;
* **dialogues** -- two-person conversations ``#Person1#: ... #Person2#: ...`` (the shape of DialogSum),
  each with a reference **summary** built from the same slots, so summarising means copying the right facts;
* **reviews** -- product reviews whose sentiment comes from graded words, intensifiers and negation
  ("not bad" is mildly positive), each with a label; review *pages* show several reviews with one
  label vocabulary (``positive/negative``, ``good/bad``, ``yes/no`` ...), a pattern few-shot prompts reuse;
* **preferences** -- a prompt with four responses ranked by a stated criterion (positive, on-topic,
  not repetitive), the raw material of a reward model.

Same seed, same corpus, byte for byte: every choice draws from one ``random.Random(seed)``.
Different seeds give unseen combinations of the same vocabulary, which is how held-out data is made.

    >>> from course_utils import world
    >>> d = world.make_dialogue(world.rng_for(7))
    >>> d.text.startswith("#Person1#:")
    True
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Iterable, Sequence

EOS = "<|endoftext|>"

# ----------------------------------------------------------------------------------------------
# Vocabulary
NAMES = ["Tom", "Anna", "Ben", "Lily", "Sam", "Mia", "Leo", "Nora", "Max", "Eva", "Jack", "Zoe",
         "Omar", "Ivy", "Paul", "Rosa", "Hugo", "Lena", "Finn", "Ruby"]
ANIMALS = ["cat", "dog", "fox", "bear", "rabbit", "owl", "mouse", "duck", "frog", "horse", "goat", "wolf"]
STORY_ADJS = ["little", "brave", "shy", "clever", "old", "young", "happy", "sleepy", "curious", "kind"]
PLACES = ["forest", "village", "garden", "river", "farm", "castle", "mountain", "beach", "park", "town"]
PROBLEMS = [("lost", "a red ball"), ("lost", "a golden key"), ("could not find", "the way home"),
            ("was afraid of", "the dark"), ("wanted", "a new friend"), ("needed", "some warm bread"),
            ("broke", "an old cup"), ("was looking for", "a blue hat")]
HELPERS = ["a wise owl", "a friendly bird", "the old farmer", "a kind girl", "a tall boy", "the baker",
           "a small dog", "the teacher"]
STORY_ENDS = ["From that day on, {name} was never sad again.",
              "{name} smiled and said thank you.",
              "That night, {name} slept well and had happy dreams.",
              "Everyone in the {place} was happy.",
              "{name} learned that friends help each other.",
              "And so the {animal} went home with a big smile."]
WEATHER = ["It was a sunny day.", "It was raining.", "The wind was cold.", "The sky was blue.",
           "It was very late.", "The morning was quiet."]
FEELINGS = ["sad", "worried", "tired", "scared", "hungry", "lonely"]

ITEMS = ["lamp", "chair", "phone", "kettle", "backpack", "jacket", "blender", "camera", "watch", "desk",
         "pillow", "bicycle", "umbrella", "radio", "laptop", "mug", "toaster", "printer", "guitar", "clock"]
COLORS = ["red", "blue", "green", "black", "white", "yellow", "gray", "brown"]
DAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
TIMES = ["seven", "eight", "nine", "ten", "six", "five"]
DISHES = ["pasta", "soup", "pizza", "salad", "fish", "rice", "noodles", "cake"]
CITIES = ["Paris", "Rome", "Tokyo", "Berlin", "Madrid", "Cairo", "Lima", "Oslo", "Seoul", "Dublin"]
TRANSPORT = ["train", "bus", "plane", "boat", "car"]
BUILDINGS = ["bank", "library", "museum", "station", "hospital", "market", "post office", "cinema"]
DIRECTIONS = ["turn left", "turn right", "go straight"]
NUMBERS = ["two", "three", "four", "five", "six"]
PRICES = ["ten", "fifteen", "twenty", "thirty", "forty", "fifty", "sixty", "eighty"]

# Sentiment words with a graded polarity. Reviews add them up; intensifiers scale, negation flips and halves.
POSITIVE_WORDS = {"great": 2.0, "excellent": 2.0, "wonderful": 2.0, "perfect": 2.0, "amazing": 2.0,
                  "good": 1.0, "nice": 1.0, "solid": 1.0, "useful": 1.0, "pleasant": 1.0}
NEGATIVE_WORDS = {"terrible": -2.0, "awful": -2.0, "useless": -2.0, "horrible": -2.0, "broken": -2.0,
                  "bad": -1.0, "poor": -1.0, "weak": -1.0, "noisy": -1.0, "cheap": -1.0}
INTENSIFIERS = {"very": 1.5, "really": 1.5, "quite": 1.2, "a bit": 0.6}
ASPECTS = ["the design", "the price", "the quality", "the size", "the sound", "the battery",
           "the color", "the delivery", "the box", "the handle"]
LABEL_SETS = [("positive", "negative"), ("good", "bad"), ("yes", "no"), ("happy", "sad"),
              ("great", "awful")]

# ----------------------------------------------------------------------------------------------
# Records


@dataclass(frozen=True)
class Dialogue:
    """A two-person dialogue and its reference summary."""
    text: str
    summary: str
    topic: str


@dataclass(frozen=True)
class Review:
    """A product review, its summed polarity score and its label (``positive`` or ``negative``)."""
    item: str
    text: str
    score: float
    label: str


@dataclass(frozen=True)
class Preference:
    """A prompt with responses and a ranking (indices of ``responses``, best first)."""
    prompt: str
    responses: tuple[str, ...]
    ranking: tuple[int, ...]
    criterion: str
    scores: tuple[float, ...] = field(default=())


def rng_for(seed: int) -> random.Random:
    """The one source of randomness for a given seed (``random.Random`` is stable across Python 3 versions)."""
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise TypeError(f"seed must be an int, got {seed!r} ({type(seed).__name__})")
    return random.Random(seed)


def _a(word: str) -> str:
    return ("an " if word[0] in "aeiou" else "a ") + word


# ----------------------------------------------------------------------------------------------
# Stories


def make_story(rng: random.Random) -> str:
    """A short story: hero, place, problem, helper, resolution, ending (5-8 sentences)."""
    name, animal = rng.choice(NAMES), rng.choice(ANIMALS)
    adj, place = rng.choice(STORY_ADJS), rng.choice(PLACES)
    verb, thing = rng.choice(PROBLEMS)
    helper = rng.choice(HELPERS)
    feeling = rng.choice(FEELINGS)
    sentences = [
        rng.choice([f"Once upon a time, there was {_a(adj)} {animal} named {name}.",
                    f"{name} was {_a(adj)} {animal} who lived in the {place}.",
                    f"There once was {_a(adj)} {animal} called {name}."]),
        rng.choice([f"{name} lived in the {place} with a big family.", rng.choice(WEATHER),
                    f"Every day, {name} played in the {place}."]),
        f"One day, {name} {verb} {thing}.",
        rng.choice([f"{name} felt very {feeling}.", f"The {animal} was {feeling} and did not know what to do.",
                    f"{name} looked everywhere in the {place}."]),
        f"Then {helper} came and asked, \"Why are you {feeling}?\"",
        rng.choice([f"{name} told {helper} about the problem.", f"\"I {verb} {thing},\" said {name}."]),
        rng.choice([f"Together they searched the {place} and found a way.",
                    f"{helper[0].upper() + helper[1:]} helped {name}, and soon all was well.",
                    f"They walked to the {rng.choice(PLACES)} and solved the problem."]),
        rng.choice(STORY_ENDS).format(name=name, place=place, animal=animal),
    ]
    if rng.random() < 0.4:  # vary the length a little
        del sentences[1]
    return " ".join(sentences)


# ----------------------------------------------------------------------------------------------
# Dialogues with summaries


def _shop(rng: random.Random) -> Dialogue:
    item, color, price = rng.choice(ITEMS), rng.choice(COLORS), rng.choice(PRICES)
    buys = rng.random() < 0.6
    turns = [f"#Person1#: Hello, I am looking for {_a(color)} {item}.",
             f"#Person2#: We have {_a(color)} {item} here. It costs {price} dollars.",
             rng.choice(["#Person1#: Is it on sale?", "#Person1#: Can I see it?", "#Person1#: Does it work well?"]),
             rng.choice(["#Person2#: Yes, it is very popular.", "#Person2#: Of course, here it is.",
                         "#Person2#: Yes, many people like it."])]
    if buys:
        turns += ["#Person1#: Great, I will take it.", "#Person2#: Thank you. Have a nice day."]
        summary = f"#Person1# buys {_a(color)} {item} for {price} dollars from #Person2#."
    else:
        turns += ["#Person1#: It is too expensive for me.", "#Person2#: I understand. Maybe next time."]
        summary = f"#Person1# wants {_a(color)} {item} but thinks {price} dollars is too expensive."
    return Dialogue(" ".join(turns), summary, "shopping")


def _restaurant(rng: random.Random) -> Dialogue:
    day, time, n, dish = rng.choice(DAYS), rng.choice(TIMES), rng.choice(NUMBERS), rng.choice(DISHES)
    turns = [f"#Person1#: Hi, I would like to book a table for {n} people.",
             "#Person2#: Sure. For which day?",
             f"#Person1#: On {day} at {time} o'clock, please.",
             rng.choice([f"#Person2#: That is fine. Our {dish} is very good that day.",
                         f"#Person2#: No problem. Do you want to try our {dish}?"]),
             f"#Person1#: Yes, we will have the {dish}. Thank you."]
    summary = f"#Person1# books a table for {n} people on {day} at {time} and will have the {dish}."
    return Dialogue(" ".join(turns), summary, "restaurant")


def _directions(rng: random.Random) -> Dialogue:
    building, direction = rng.choice(BUILDINGS), rng.choice(DIRECTIONS)
    n = rng.choice(NUMBERS)
    turns = [f"#Person1#: Excuse me, where is the {building}?",
             f"#Person2#: Walk {n} blocks and then {direction}.",
             rng.choice(["#Person1#: Is it far from here?", "#Person1#: Can I walk there?"]),
             rng.choice(["#Person2#: No, it is about ten minutes.", "#Person2#: Yes, it is not far."]),
             "#Person1#: Thank you very much."]
    summary = f"#Person2# tells #Person1# to walk {n} blocks and {direction} to reach the {building}."
    return Dialogue(" ".join(turns), summary, "directions")


def _trip(rng: random.Random) -> Dialogue:
    city, transport, day = rng.choice(CITIES), rng.choice(TRANSPORT), rng.choice(DAYS)
    turns = [f"#Person1#: I am going to {city} next week.",
             "#Person2#: How will you travel?",
             f"#Person1#: I will take the {transport} on {day}.",
             rng.choice([f"#Person2#: {city} is beautiful. Have a good trip.",
                         f"#Person2#: I went to {city} last year. You will love it."]),
             "#Person1#: Thanks, I am very excited."]
    summary = f"#Person1# will travel to {city} by {transport} on {day}."
    return Dialogue(" ".join(turns), summary, "travel")


def _borrow(rng: random.Random) -> Dialogue:
    item, day = rng.choice(ITEMS), rng.choice(DAYS)
    agrees = rng.random() < 0.6
    turns = [f"#Person1#: Can I borrow your {item}?", "#Person2#: Why do you need it?",
             f"#Person1#: Mine is broken and I need one until {day}."]
    if agrees:
        turns += [f"#Person2#: Sure, you can have my {item} until {day}.", "#Person1#: Thank you so much."]
        summary = f"#Person2# lends #Person1# the {item} until {day}."
    else:
        turns += [f"#Person2#: Sorry, I need my {item} this week.", "#Person1#: That is fine, I will ask Tom."]
        summary = f"#Person2# cannot lend #Person1# the {item} because #Person2# needs it."
    return Dialogue(" ".join(turns), summary, "borrowing")


DIALOGUE_KINDS = (_shop, _restaurant, _directions, _trip, _borrow)


def make_dialogue(rng: random.Random) -> Dialogue:
    """One dialogue of a random kind (shopping, restaurant, directions, travel, borrowing) and its summary."""
    return rng.choice(DIALOGUE_KINDS)(rng)


# ----------------------------------------------------------------------------------------------
# Reviews with graded sentiment


def _phrase(rng: random.Random, polarity: int) -> tuple[str, float]:
    """A sentiment phrase and its score. ``polarity`` +1 or -1 is the sign the phrase should have."""
    negated = rng.random() < 0.2
    # "not bad" is mildly positive: pick a word of the opposite sign and negate it.
    words = POSITIVE_WORDS if (polarity > 0) != negated else NEGATIVE_WORDS
    word = rng.choice(sorted(words))
    score = words[word]
    if negated:
        return f"not {word}", -0.5 * score
    if rng.random() < 0.35:
        intensifier = rng.choice(sorted(INTENSIFIERS))
        return f"{intensifier} {word}", score * INTENSIFIERS[intensifier]
    return word, score


def make_review(rng: random.Random, label: str | None = None, item: str | None = None) -> Review:
    """A review of 2-4 aspect sentences. Mixed reviews are common; the label is the sign of the summed score.

    ``label`` (``"positive"``/``"negative"``) forces the overall sentiment; ``item`` fixes the product.
    """
    if label not in (None, "positive", "negative"):
        raise ValueError(f"label must be 'positive', 'negative' or None, got {label!r}")
    item = item or rng.choice(ITEMS)
    target = (1 if rng.random() < 0.5 else -1) if label is None else (1 if label == "positive" else -1)
    for _ in range(100):
        n = rng.randint(2, 4)
        aspects = rng.sample(ASPECTS, n)
        # Most sentences follow the target; some go against it, so the label needs weighing, not spotting.
        polarities = [target if rng.random() < 0.75 else -target for _ in range(n)]
        phrases = [_phrase(rng, p) for p in polarities]
        score = round(sum(s for _, s in phrases), 2)
        if score != 0 and (score > 0) == (target > 0):
            break
    opener = rng.choice([f"I bought this {item} last {rng.choice(DAYS)}.", f"This {item} arrived quickly.",
                         f"I have used the {item} for a month.", f"My friend gave me this {item}."])
    body = [f"{aspect[0].upper() + aspect[1:]} is {phrase}." for aspect, (phrase, _) in zip(aspects, phrases)]
    text = " ".join([opener, *body])
    return Review(item, text, score, "positive" if score > 0 else "negative")


def format_review(review: Review, label_words: tuple[str, str] = ("positive", "negative"),
                  with_label: bool = True) -> str:
    """The review block used in pre-training pages and few-shot prompts: ``Review: ...\\nSentiment: ...``."""
    word = label_words[0] if review.label == "positive" else label_words[1]
    return f"Review: {review.text}\nSentiment:" + (f" {word}" if with_label else "")


def make_review_page(rng: random.Random) -> str:
    """A page of 1-4 labelled reviews sharing one label vocabulary: the in-context pattern few-shot prompts use."""
    label_words = rng.choice(LABEL_SETS)
    return "\n\n".join(format_review(make_review(rng), label_words) for _ in range(rng.randint(1, 4)))


# ----------------------------------------------------------------------------------------------
# Sorting pages: in-context learning episodes with fresh labels
#
# A *sorting page* puts words into boxes named by label words: ``Sort the words: great: red, Paris: blue,
# awful: blue, nice: red, ...``. The box names are drawn afresh for every page from :data:`LABEL_WORDS`, words
# that say nothing about the words sorted, so the only way to predict a box is to look at the earlier pairs of
# the same page: which box took words of this kind. Chan et al. (2022) found that such "bursty" data (classes
# that recur within a context, with a mapping that changes between contexts) is what makes small transformers
# learn in context. The pattern is the one an induction head completes (``A : B ... A :`` -> ``B``), with
# "a word of the same kind" in place of "the same word".

LABEL_WORDS = COLORS + DISHES + TRANSPORT  # box names: none of them is a word that gets sorted
WORD_CLASSES = {"animal": ANIMALS, "city": CITIES, "item": ITEMS, "day": DAYS, "name": NAMES, "place": PLACES,
                "positive": sorted(POSITIVE_WORDS), "negative": sorted(NEGATIVE_WORDS)}
SORT_HEADER = "Sort the words:"


def sorting_prompt(pairs: Sequence[tuple[str, str]], query: str | None = None) -> str:
    """``Sort the words: w1: l1, w2: l2, ...`` and, if given, ``query:`` last (its box is what comes next)."""
    items = [f"{w}: {label}" for w, label in pairs] + ([f"{query}:"] if query is not None else [])
    return f"{SORT_HEADER} " + ", ".join(items)


def make_sorting_page(rng: random.Random, classes: Sequence[str] | None = None, k: int | None = None) -> str:
    """A page of ``k`` (6-16) sorted words from two or three classes, each class with a box name drawn for this page.

    Without ``classes``, 40 % of pages sort sentiment words (positive / negative) and the others two or three
    kinds of things (animals, cities, items, days, names, places).
    """
    if classes is None:
        classes = (["positive", "negative"] if rng.random() < 0.4 else
                   rng.sample(["animal", "city", "item", "day", "name", "place"], rng.choice([2, 2, 3])))
    unknown = [c for c in classes if c not in WORD_CLASSES]
    if unknown or len(classes) < 2:
        raise ValueError(f"classes must be two or more of {sorted(WORD_CLASSES)}, got {list(classes)!r}")
    k = k if k is not None else rng.randint(6, 16)
    boxes = dict(zip(classes, rng.sample(LABEL_WORDS, len(classes))))
    pairs = []
    for _ in range(k):
        c = rng.choice(list(classes))
        pairs.append((rng.choice(WORD_CLASSES[c]), boxes[c]))
    return sorting_prompt(pairs) + "."


def sorting_pages(seed: int, n: int) -> list[str]:
    """``n`` sorting pages (see :func:`make_sorting_page`)."""
    rng = rng_for(seed)
    return [make_sorting_page(rng) for _ in range(n)]


# ----------------------------------------------------------------------------------------------
# Preferences for RLHF

PREFERENCE_CRITERION = ("A better review is positive about the product it was asked about, "
                        "and does not repeat itself.")


def preference_score(text: str, item: str) -> float:
    """The stated preference as a number: sentiment, minus penalties for being off-topic or repetitive.

    Each sentiment word counts once (scaled by an intensifier, flipped and halved by "not"); every repeat
    of a content word costs 1.5; a review that never names ``item`` loses 3. This is the 'human labeller'
    of the course world: the reward model must learn it from rankings alone.
    """
    words = _words(text)
    score = sentiment_score(text)
    if item not in words:
        score -= 3.0  # off-topic: never names the product
    content = [w for w in words if w not in _FUNCTION_WORDS]
    score -= 1.5 * (len(content) - len(set(content)))
    return round(score, 3)


def _words(text: str) -> list[str]:
    return text.lower().replace(".", " ").replace(",", " ").replace("\"", " ").split()


def sentiment_score(text: str) -> float:
    """The summed polarity of a text's sentiment words, each counted once ("not" flips and halves, an
    intensifier scales): > 0 reads positive, < 0 negative, 0 neutral. The sentiment part of
    :func:`preference_score`, and how the course judges the sentiment of generated reviews."""
    words = _words(text)
    score, seen, i = 0.0, set(), 0
    while i < len(words):
        scale = 1.0
        if words[i] == "not" and i + 1 < len(words):
            scale, i = -0.5, i + 1
        elif words[i] in INTENSIFIERS and i + 1 < len(words):
            scale, i = INTENSIFIERS[words[i]], i + 1
        elif words[i] == "a" and i + 2 < len(words) and words[i + 1] == "bit":
            scale, i = INTENSIFIERS["a bit"], i + 2
        w = words[i]
        if w not in seen:
            score += scale * (POSITIVE_WORDS.get(w, 0.0) + NEGATIVE_WORDS.get(w, 0.0))
        seen.add(w)
        i += 1
    return round(score, 3)


_FUNCTION_WORDS = frozenset("the a an is it i this my me for of and was has have to with last month "
                            "gave used bought arrived quickly friend not very really quite bit".split())


def make_preference(rng: random.Random, n_responses: int = 4) -> Preference:
    """A prompt and ``n_responses`` responses ranked by :func:`preference_score` (ties broken by order)."""
    item = rng.choice(ITEMS)
    prompt = f"Write a review of the {item}."
    responses: list[str] = []
    while len(responses) < n_responses:
        kind = rng.random()
        if kind < 0.15:  # reward hacking in the data: a pile of praise with no content
            word = rng.choice(sorted(POSITIVE_WORDS))
            text = f"The {item} is {word}. " + " ".join([word] * rng.randint(4, 8)) + "."
        elif kind < 0.3:  # off-topic: a review of another product
            other = rng.choice([i for i in ITEMS if i != item])
            text = make_review(rng, item=other).text
        else:
            text = make_review(rng, item=item).text
        if text not in responses:
            responses.append(text)
    scores = tuple(preference_score(r, item) for r in responses)
    ranking = tuple(sorted(range(n_responses), key=lambda i: (-scores[i], i)))
    return Preference(prompt, tuple(responses), ranking, PREFERENCE_CRITERION, scores)


# ----------------------------------------------------------------------------------------------
# Instruction prompts (the FLAN-style tasks of tiny-instruct)

def summarize_prompt(dialogue_text: str) -> str:
    """The instruction that asks for a dialogue summary; the completion follows after ``Summary:``."""
    return f"Summarize the dialogue:\n{dialogue_text}\nSummary:"


def classify_prompt(review_text: str) -> str:
    """The instruction that asks for a review's sentiment; the answer is `` positive`` or `` negative``."""
    return f"Is this review positive or negative?\nReview: {review_text}\nAnswer:"


def continue_prompt(story_start: str) -> str:
    """The instruction that asks to continue a story."""
    return f"Continue the story:\n{story_start}\nStory:"


def write_review_prompt(item: str, label: str) -> str:
    """The instruction that asks for a review of a given sentiment."""
    return f"Write a {label} review of the {item}.\nReview:"


def make_instruction(rng: random.Random) -> tuple[str, str]:
    """One (prompt, completion) pair from a random task; the completion starts with a space."""
    task = rng.random()
    if task < 0.4:
        d = make_dialogue(rng)
        return summarize_prompt(d.text), " " + d.summary
    if task < 0.7:
        r = make_review(rng)
        return classify_prompt(r.text), " " + r.label
    if task < 0.85:
        story = make_story(rng)
        cut = story.index(". ") + 1
        return continue_prompt(story[:cut]), story[cut:]
    label = rng.choice(["positive", "negative"])
    r = make_review(rng, label=label)
    return write_review_prompt(r.item, label), " " + r.text


# ----------------------------------------------------------------------------------------------
# Corpora


def pretraining_documents(seed: int, n_documents: int) -> list[str]:
    """Documents for pre-training: stories 40 %, dialogues without summaries 30 %, review pages 30 %."""
    rng = rng_for(seed)
    docs = []
    for _ in range(n_documents):
        r = rng.random()
        if r < 0.4:
            docs.append(make_story(rng))
        elif r < 0.7:
            docs.append(make_dialogue(rng).text)
        else:
            docs.append(make_review_page(rng))
    return docs


def pretraining_corpus(seed: int = 0, n_documents: int = 20_000) -> str:
    """The pre-training text: documents joined by the end-of-text marker. Deterministic per seed."""
    return EOS.join(pretraining_documents(seed, n_documents)) + EOS


def dialogues(seed: int, n: int) -> list[Dialogue]:
    """``n`` dialogues with summaries. Use a seed the models never saw (see ``HELD_OUT_SEED``) to evaluate."""
    rng = rng_for(seed)
    return [make_dialogue(rng) for _ in range(n)]


def reviews(seed: int, n: int, balanced: bool = True) -> list[Review]:
    """``n`` reviews; ``balanced`` alternates positive and negative labels."""
    rng = rng_for(seed)
    return [make_review(rng, label=("positive", "negative")[i % 2] if balanced else None) for i in range(n)]


def stories(seed: int, n: int) -> list[str]:
    """``n`` stories."""
    rng = rng_for(seed)
    return [make_story(rng) for _ in range(n)]


def preferences(seed: int, n: int) -> list[Preference]:
    """``n`` ranked preference examples."""
    rng = rng_for(seed)
    return [make_preference(rng) for _ in range(n)]


def instructions(seed: int, n: int) -> list[tuple[str, str]]:
    """``n`` (prompt, completion) instruction pairs across tasks."""
    rng = rng_for(seed)
    return [make_instruction(rng) for _ in range(n)]


# Seeds: the bundled models trained on TRAIN_SEED (pre-training) and INSTRUCT_SEED (instruction tuning).
# Evaluate on HELD_OUT_SEED or any other seed: the combinations there were never seen in training.
TRAIN_SEED = 0
INSTRUCT_SEED = 1
HELD_OUT_SEED = 12345


def vocabulary() -> set[str]:
    """Every word the grammar can produce (lower-cased, punctuation stripped): for tests and the tokenizer."""
    words: set[str] = set()
    rng = rng_for(99)
    samples: Iterable[str] = (pretraining_documents(99, 3000)
                              + [d.summary for d in dialogues(99, 500)]
                              + [p for pair in instructions(99, 500) for p in pair])
    del rng
    for s in samples:
        for w in s.replace("\n", " ").split():
            words.add(w.strip(".,?!:\"").lower())
    words.discard("")
    return words


def word_count(texts: Sequence[str]) -> int:
    """Whitespace-separated words in ``texts``."""
    return sum(len(t.split()) for t in texts)
