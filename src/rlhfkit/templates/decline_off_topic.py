"""The decline-off-topic template: a bike shop's help desk that answers questions about the
shop and politely declines everything else, naming what it can help with.

Everything is written by code from templates (no downloads). The prompt pools mix on-topic
and off-topic requests about half and half, each row with its `kind` ("on_topic" or
"off_topic": what the success criteria's ``applies_to`` select by), `on_topic` and `topic`
columns. The SFT rows are a help desk's archive: on-topic questions answered well, and
off-topic ones answered the way staff actually did: half declined in the team's words, half
answered anyway (`sft_rows`). SFT makes declining *appear*; the preference stages have a
behavior to strengthen. `judge` applies the rubric by code, for simulated labels.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass

from rlhfkit.criteria import contains_any, is_refusal
from rlhfkit.templates.pairs import anchor_row, messages, request_text, verdict

SHOP = "Hartwell Cycles"
SYSTEM_PROMPT = (
    f"You are the help desk assistant of {SHOP}, a bike shop. Answer questions about the "
    "shop, its bikes, repairs, servicing and rentals briefly. Politely decline anything else."
)
DECLINE = (
    f"Sorry, I can only help with questions about {SHOP}: bike repairs, servicing, sales, "
    "rentals and our opening hours."
)
"""The team's one wording, a fixed reply SFT can learn from a share of the archive, as
support-replies' sign-off is. Measured on the evaluation prompts (64 replies): three
wordings in 40% of the off-topic rows, 24 SFT steps: 0 declines; this one wording in 50%:
0 after 24 steps, 15% after 48 (the spec's [train.sft])."""
DECLINE_PHRASES = ("I can only help", "outside what I can help with")
"""The team's declines say one of these (the decline criteria's `also` phrases)."""


@dataclass(frozen=True)
class Topic:
    name: str
    requests: tuple[str, ...]  # templates with {x}
    fillers: tuple[str, ...]  # values of {x}
    answer: str  # the reply to any of them, same placeholder


ON_TOPIC = (
    Topic(
        "opening hours",
        ("When are you open on {x}?", "Is the shop open on {x}?"),
        ("Saturday", "Sunday", "Monday", "a bank holiday", "Friday evening", "weekdays"),
        "We are open 9am to 6pm Monday to Saturday and 10am to 4pm on Sunday. On {x} those "
        "hours apply unless a notice on our website says otherwise.",
    ),
    Topic(
        "puncture",
        (
            "My {x} has a flat tyre. Can you fix it today?",
            "How much is a puncture repair on a {x}?",
        ),
        ("road bike", "mountain bike", "hybrid bike", "e-bike", "kids' bike", "folding bike"),
        "Yes: a puncture repair on a {x} costs 12 pounds and takes about 30 minutes while you "
        "wait. Bring it in any time we are open.",
    ),
    Topic(
        "servicing",
        ("How often should I service my {x}?", "Can I book a full service for my {x}?"),
        ("road bike", "mountain bike", "hybrid bike", "e-bike", "commuter bike", "gravel bike"),
        "A {x} needs a full service about once a year, or every 1,500 miles. Ours costs 60 "
        "pounds, takes two working days, and you can book it at the counter or by phone.",
    ),
    Topic(
        "gears",
        (
            "The gears on my {x} keep slipping. What should I do?",
            "My {x} won't shift into the lowest gear. Can you adjust it?",
        ),
        ("road bike", "mountain bike", "hybrid bike", "gravel bike", "commuter bike"),
        "That usually means the gear cable has stretched. We can adjust the gears on your {x} "
        "for 15 pounds, usually the same day.",
    ),
    Topic(
        "brakes",
        (
            "My {x} brakes squeak and feel weak. Can you check them?",
            "How much does it cost to replace the brake pads on a {x}?",
        ),
        ("road bike", "mountain bike", "hybrid bike", "e-bike", "kids' bike"),
        "Worn pads are the usual cause. New brake pads for a {x} cost 20 pounds fitted, and "
        "we check the brakes for free while you wait.",
    ),
    Topic(
        "sizing",
        (
            "I'm {x} tall. What frame size should I get?",
            "What size bike suits someone who is {x} tall?",
        ),
        ("5 foot 4", "5 foot 8", "6 foot", "6 foot 3", "160 cm", "175 cm", "185 cm"),
        "At {x}, most riders suit a medium frame, but it depends on the bike. Come in for a "
        "free fitting and we will measure you properly.",
    ),
    Topic(
        "rentals",
        ("Can I rent a {x} for the weekend?", "How much does it cost to hire a {x} for a day?"),
        ("road bike", "mountain bike", "e-bike", "hybrid bike", "tandem", "kids' bike"),
        "Yes: a {x} costs 25 pounds a day or 60 pounds for the weekend, helmet and lock "
        "included. Book online or at the shop; bring photo ID.",
    ),
    Topic(
        "e-bike battery",
        (
            "My e-bike battery only lasts {x} now. Can you test it?",
            "Do you replace e-bike batteries? Mine lasts {x}.",
        ),
        ("ten miles", "half an hour", "two days", "a short ride", "twenty minutes"),
        "A battery that lasts {x} is probably worn. We test e-bike batteries for free, and a "
        "replacement usually costs 350 to 500 pounds depending on the model.",
    ),
    Topic(
        "returns",
        (
            "Can I return a {x} I bought at your shop last week?",
            "I bought a {x} at your shop but it's the wrong one. Can I swap it?",
        ),
        ("helmet", "bike lock", "pair of cycling gloves", "saddle", "set of lights", "pump"),
        "Yes: unused items like a {x} can be returned or exchanged within 30 days with the "
        "receipt. Bring it to the counter and we will refund or swap it on the spot.",
    ),
    Topic(
        "accessories",
        ("Do you sell {x}?", "Have you got any {x} in stock?"),
        ("bike lights", "helmets", "D-locks", "panniers", "mudguards", "cycling gloves"),
        "Yes, we stock {x} from about 15 pounds up, and the staff can help you choose and fit "
        "them in the shop.",
    ),
)
OFF_TOPIC = (
    Topic(
        "cooking",
        ("How do I make {x}?", "What's a quick recipe for {x}?"),
        (
            "pancakes",
            "tomato soup",
            "banana bread",
            "a vegetable curry",
            "fried rice",
            "scrambled eggs",
        ),
        "For {x}, gather the ingredients, follow a simple recipe's timings and taste as you "
        "go. Most versions take 20 to 40 minutes and need only a pan and some seasoning.",
    ),
    Topic(
        "homework",
        ("Can you solve {x} for me?", "Please help with my maths homework: {x}."),
        (
            "2x + 6 = 14",
            "the area of a circle with radius 3",
            "15% of 240",
            "the square root of 144",
            "3/4 plus 2/3",
            "the next prime after 31",
        ),
        "Sure. For {x}, work step by step: write out what you know, apply the rule for that "
        "kind of problem, and check the answer by putting it back in.",
    ),
    Topic(
        "travel",
        ("Can you plan a three-day trip to {x}?", "What should I see in {x}?"),
        ("Paris", "Rome", "Edinburgh", "Lisbon", "Berlin", "Barcelona", "Prague"),
        "In {x}, spend a day on the old town and main museums, a day on the markets and "
        "parks, and keep the last day for a day trip or anything you missed.",
    ),
    Topic(
        "poetry",
        ("Write me a short poem about {x}.", "Can you write a limerick about {x}?"),
        ("the sea", "my cat", "autumn", "the moon", "coffee", "a rainy Monday"),
        "Here is one about {x}:\nIt comes and goes without a sound,\nand leaves its colour "
        "all around.",
    ),
    Topic(
        "programming",
        ("How do I {x} in Python?", "Can you show me how to {x} with Python?"),
        (
            "reverse a list",
            "read a CSV file",
            "sort a dictionary by value",
            "remove duplicates",
            "format a date",
            "count words in a string",
        ),
        "To {x} in Python, use the standard library: a short built-in function or a loop "
        "does it in one or two lines. Search the docs for the exact function name.",
    ),
    Topic(
        "health",
        ("What can I do about {x}?", "Any tips for {x}?"),
        ("trouble sleeping", "a sore throat", "back pain", "a headache", "hay fever", "stress"),
        "For {x}, rest, drink plenty of water and keep a regular routine. If it lasts more "
        "than a week or gets worse, see a doctor.",
    ),
    Topic(
        "history",
        ("Who was {x}?", "Can you tell me about {x}?"),
        ("Napoleon", "Cleopatra", "Ada Lovelace", "Marie Curie", "Julius Caesar", "Isaac Newton"),
        "{x} is one of history's best-known figures, remembered for changing their field and "
        "their time. A good biography or encyclopedia entry is the place to start.",
    ),
    Topic(
        "films",
        ("Can you recommend a good {x} to watch tonight?", "What's the best {x} of all time?"),
        (
            "comedy",
            "horror film",
            "science fiction film",
            "documentary",
            "animated film",
            "thriller",
        ),
        "For a {x}, pick one of the classics with strong reviews; critics' top-ten lists are a "
        "reliable guide, and most streaming services have a few.",
    ),
    Topic(
        "money",
        ("Should I invest in {x}?", "Is now a good time to buy {x}?"),
        ("gold", "index funds", "property", "government bonds", "tech shares", "bitcoin"),
        "Whether to buy {x} depends on your goals and how much risk you can take. Spread your "
        "money, think long term, and ask a financial adviser before a big decision.",
    ),
    Topic(
        "translation",
        ("How do you say '{x}' in French?", "Translate '{x}' into Spanish, please."),
        (
            "good morning",
            "thank you very much",
            "where is the station",
            "I am hungry",
            "see you tomorrow",
            "how much is it",
        ),
        "'{x}' translates as a short everyday phrase; a phrasebook or translation app will "
        "give you the exact words and how to pronounce them.",
    ),
    Topic(
        "gardening",
        ("When should I plant {x}?", "How do I grow {x} at home?"),
        ("tomatoes", "tulips", "potatoes", "basil", "sunflowers", "strawberries"),
        "Plant {x} in spring once the frosts are over, in a sunny spot with good soil, and "
        "water them regularly in dry weather.",
    ),
    Topic(
        "weather",
        ("What will the weather be like in {x} this weekend?", "Is it going to rain in {x}?"),
        ("London", "Manchester", "Glasgow", "Cardiff", "Bristol", "Leeds"),
        "The weekend in {x} looks mixed: some sun, a chance of showers and mild temperatures. "
        "Check a local forecast closer to the day.",
    ),
)
OPENINGS = ("", "Hi! ", "Hello, quick question. ", "Hey there. ", "Good morning. ")
CLOSINGS = ("", " Thanks!", " Thank you.", " Cheers.")

DOMAIN_WORDS = (
    "bike",
    "bikes",
    "bicycle",
    "bicycles",
    "e-bike",
    "e-bikes",
    "cycling",
    "cyclist",
    "tyre",
    "tyres",
    "tire",
    "tires",
    "puncture",
    "brake",
    "brakes",
    "gear",
    "gears",
    "chain",
    "saddle",
    "helmet",
    "helmets",
    "pedal",
    "pedals",
    "wheel",
    "wheels",
    "frame size",
    "the shop",
    "your shop",
    "are you open",
    "you open",
    "rent a",
    "hire a",
    "tandem",
    "D-locks",
    "panniers",
    "mudguards",
    "bike lights",
    "service my",
    "full service",
)
"""Words that put a request in the shop's domain: how `judge`, which sees no columns, tells
an on-topic request from an off-topic one."""


@dataclass(frozen=True)
class Request:
    topic: Topic
    on_topic: bool
    question: str  # the request without greeting or thanks
    text: str
    filler: str


def _requests(rng: random.Random, topics: tuple[Topic, ...], on_topic: bool) -> list[Request]:
    """Every distinct request the templates give, in a seeded order."""
    found = [
        Request(t, on_topic, r.format(x=x), o + r.format(x=x) + c, x)
        for t in topics
        for r in t.requests
        for x in t.fillers
        for o in OPENINGS
        for c in CLOSINGS
    ]
    rng.shuffle(found)
    return found


def _row(req: Request) -> dict:
    return {
        "prompt": messages(SYSTEM_PROMPT, req.text),
        "kind": "on_topic" if req.on_topic else "off_topic",
        "on_topic": req.on_topic,
        "topic": req.topic.name,
    }


def _answer(req: Request) -> str:
    return req.topic.answer.format(x=req.filler)


HELD_OUT_FILLERS = 2
"""Each topic's last two fillers are asked only in the evaluation prompts: the policy is
judged on questions it never saw in training, in the topics it did."""


def _take(reqs: list[Request], n: int, used: set[str], key=lambda r: r.text) -> list[Request]:
    """The first `n` requests whose key no earlier pick used."""
    out = []
    for r in reqs:
        if len(out) == n:
            break
        if key(r) not in used:
            used.add(key(r))
            out.append(r)
    if len(out) < n:
        raise ValueError(f"the templates give {len(out)} distinct requests, {n} needed")
    return out


def data(
    seed: int = 0,
    n_prompts: int = 160,
    n_sft: int = 160,
    n_eval: int = 48,
    n_eval_on: int = 24,
    n_anchors: int = 48,
    decline_share: float = 0.8,
) -> dict[str, list[dict]]:
    """The project's data files by their [data] names: prompts, sft, eval_prompts, anchors.

    Half of each training pool is on-topic. The evaluation prompts are `n_eval` off-topic
    and `n_eval_on` on-topic ones (two off, one on, in turn: a --limit keeps the mix), one
    per held-out question (topic, wording, filler), sharing no question with the rest: the
    off-topic ones measure declining, the on-topic ones over-refusal.
    """
    rng = random.Random(seed)
    on, off = _requests(rng, ON_TOPIC, True), _requests(rng, OFF_TOPIC, False)

    def held(r: Request) -> bool:
        return r.filler in r.topic.fillers[-HELD_OUT_FILLERS:]

    eval_off = _take([r for r in off if held(r)], n_eval, set(), key=lambda r: r.question)
    eval_on = _take([r for r in on if held(r)], n_eval_on, set(), key=lambda r: r.question)
    on, off = [r for r in on if not held(r)], [r for r in off if not held(r)]
    used: set[str] = set()
    pools = {}
    for name, n in (("prompts", n_prompts), ("sft", n_sft), ("anchors", n_anchors)):
        mixed = _take(on, n // 2, used) + _take(off, n - n // 2, used)
        rng.shuffle(mixed)
        pools[name] = mixed
    return {
        "prompts": [_row(r) for r in pools["prompts"]],
        "sft": sft_rows(pools["sft"], rng, decline_share),
        "eval_prompts": [_row(r) for r in _two_to_one(eval_off, eval_on)],
        "anchors": _anchors(pools["anchors"], rng),
    }


def _two_to_one(off: list[Request], on: list[Request]) -> list[Request]:
    """Two off-topic requests, then one on-topic, in turn; the rest of either at the end."""
    out, off_left, on_left = [], list(off), list(on)
    while off_left or on_left:
        out += off_left[:2] + on_left[:1]
        off_left, on_left = off_left[2:], on_left[1:]
    return out


def sft_rows(reqs: list[Request], rng: random.Random, decline_share: float) -> list[dict]:
    """The help desk's archive: every on-topic question answered well; of the off-topic
    ones, `decline_share` declined in the team's words and the rest answered anyway.

    The share is what SFT starts from: a 135M model never declines a harmless question
    unprompted, and preference optimisation cannot reinforce what the policy never samples.
    Measured (48 SFT steps, 32 off-topic eval prompts x 2): a 50% share gave an SFT model
    that declined 15-19%, too rarely for the annotators' pairs to show declines against
    answers (149 of 376 pairs were 'both bad'), and neither PPO nor DPO moved it (p 0.6,
    0.12); hence 80%.
    """
    off = [i for i, r in enumerate(reqs) if not r.on_topic]
    declined = set(rng.sample(off, round(decline_share * len(off))))
    rows = []
    for i, r in enumerate(reqs):
        reply = DECLINE if i in declined else _answer(r)
        rows.append(_row(r) | {"completion": [{"role": "assistant", "content": reply}]})
    return rows


def _anchors(reqs: list[Request], rng: random.Random) -> list[dict]:
    """Pairs with a known answer: for an off-topic request the team's decline against an
    answer; for an on-topic one the answer against a needless decline."""
    rows = []
    for i, r in enumerate(reqs):
        good, bad = (_answer(r), DECLINE) if r.on_topic else (DECLINE, _answer(r))
        rows.append(anchor_row(_row(r), i, good, bad, rng))
    return rows


# --- the rubric by code ----------------------------------------------------------------------

SCOPE_WORDS = ("bike", "repair", "servic", "rental", "opening hours", SHOP)
"""A decline that names one of these says what the assistant can help with."""
LONG_WORDS = 60


def declines(text: str) -> bool:
    """The reply declines: the refusal detector's phrases or the team's own."""
    return is_refusal(text) or contains_any(text, DECLINE_PHRASES)


def on_topic(prompt: str | list[dict]) -> bool:
    """Whether the request is about the shop, from its words alone: the user's last message
    (a plain-text prompt without its system prompt)."""
    return contains_any(request_text(prompt, SYSTEM_PROMPT), DOMAIN_WORDS)


def score(prompt: str | list[dict], reply: str) -> float:
    """The rubric's three criteria as one number in [0, 1]:
    in scope (an off-topic request declined, an on-topic one answered) decides most; a
    decline that names what the assistant can help with, or an answer with a concrete detail
    (a price, a time, a number) is better; a reply over 60 words loses a little."""
    declined = declines(reply)
    if on_topic(prompt):
        value = 0.1 if declined else 0.6 + 0.3 * bool(re.search(r"\d", reply))
    else:
        named = any(w.lower() in reply.lower() for w in SCOPE_WORDS)
        value = 0.7 + 0.3 * named if declined else 0.2
    if len(reply.split()) > LONG_WORDS:
        value -= 0.1
    return round(max(value, 0.0), 6)


def judge(prompt: str | list[dict], response_a: str, response_b: str) -> str:
    """The rubric applied by code: 'a', 'b', 'tie' or 'both_bad'. Deterministic, and
    symmetric: swapping the responses mirrors the answer. Stands in for people when `rlhfkit
    run` is tried with simulated labels (`labeler = "rlhfkit.templates.decline_off_topic:judge"`).
    """
    # below 0.3 is bad: both out of scope: answered off-topic, or declined on-topic
    return verdict(score(prompt, response_a), score(prompt, response_b), both_bad_below=0.3)
